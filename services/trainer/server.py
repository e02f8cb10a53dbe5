"""Trainer process: configuration, server factory, registration with the scheduler, main."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import torch

from trainyard import log as logs
from trainyard import metrics
from trainyard.config import S3Config, SecurityConfig, env_float, env_int, env_str
from trainyard.images import DEFAULT_MAX_PIXELS
from trainyard.objectstore import ObjectStore
from trainyard.rpc import RunningServer, channel, create_server, serve_until_signal
from trainyard.scheduler.v1 import scheduler_service_pb2 as sched
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sched_grpc
from trainyard.services.trainer import distributed
from trainyard.services.trainer.runtime import MODEL_CACHE_SIZE, TrainerRuntime
from trainyard.services.trainer.servicer import TrainerServicer
from trainyard.trainer.v1 import trainer_service_pb2, trainer_service_pb2_grpc

SERVICE_NAME = trainer_service_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name
INTERNAL_METHODS = [f"/{SERVICE_NAME}/{m.name}" for m in trainer_service_pb2.DESCRIPTOR.services_by_name["TrainerService"].methods]
log = logs.get_logger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    listen: str
    advertise: str  # the address the scheduler dials; defaults to the listen address
    trainer_id: str
    scheduler_address: str  # empty: do not register (tests that call the trainer directly)
    flavors: tuple[str, ...]
    slots: int
    device: str | None
    heartbeat_seconds: float
    s3: S3Config
    security: SecurityConfig
    metrics_listen: str = ""  # /metrics address; empty: off
    ddp_processes: int = 1  # processes per job: one per GPU on a multi-GPU trainer (DDP)
    model_cache_size: int = MODEL_CACHE_SIZE  # model versions kept loaded for Predict
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # of one image sent to Predict

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrainerConfig:
        env = os.environ if env is None else env
        listen = env_str(env, "TRAINYARD_TRAINER_LISTEN", "127.0.0.1:50053")
        slots = env_int(env, "TRAINYARD_TRAINER_SLOTS", 1)
        if slots < 1:
            raise SystemExit(f"TRAINYARD_TRAINER_SLOTS={slots}: a trainer runs at least 1 job at a time")
        flavors = tuple(f.strip() for f in env_str(env, "TRAINYARD_TRAINER_FLAVORS", "free-gpu,compute-gpu-1").split(",")
                        if f.strip())
        if not flavors:
            raise SystemExit("TRAINYARD_TRAINER_FLAVORS is empty: name the flavors this trainer serves, comma-separated")
        device = env.get("TRAINYARD_TRAINER_DEVICE") or None
        model_cache_size = env_int(env, "TRAINYARD_TRAINER_MODEL_CACHE", MODEL_CACHE_SIZE)
        if model_cache_size < 1:
            raise SystemExit(f"TRAINYARD_TRAINER_MODEL_CACHE={model_cache_size}: at least 1 model must stay loaded")
        return cls(
            listen=listen,
            advertise=env_str(env, "TRAINYARD_TRAINER_ADVERTISE", listen),
            trainer_id=env_str(env, "TRAINYARD_TRAINER_ID", socket.gethostname()),
            scheduler_address=env.get("TRAINYARD_SCHEDULER_ADDRESS", ""),
            flavors=flavors,
            slots=slots,
            device=device,
            heartbeat_seconds=env_float(env, "TRAINYARD_HEARTBEAT_SECONDS", 5.0),
            s3=S3Config.from_env(env),
            security=SecurityConfig.from_env(env),
            metrics_listen=env_str(env, "TRAINYARD_TRAINER_METRICS_LISTEN", ""),
            ddp_processes=distributed.job_world_size(device, slots, env),
            model_cache_size=model_cache_size,
            max_image_pixels=env_int(env, "TRAINYARD_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS),
        )


def build(config: TrainerConfig) -> tuple[RunningServer, TrainerRuntime]:
    if not torch.cuda.is_available():
        # Jobs share the CPU cores: each slot gets its share, or concurrent jobs thrash.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.slots))
    objects = ObjectStore(config.s3.endpoint, config.s3.access_key, config.s3.secret_key, config.s3.bucket, config.s3.secure)
    runtime = TrainerRuntime(objects, slots=config.slots, device=config.device, ddp_processes=config.ddp_processes,
                             model_cache_size=config.model_cache_size, max_image_pixels=config.max_image_pixels)
    running = create_server(
        config.listen,
        lambda server: trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(TrainerServicer(runtime), server),
        [SERVICE_NAME],
        # The trainer's whole API is for the scheduler: tenants never call it.
        authenticator=config.security.authenticator(internal_methods=INTERNAL_METHODS),
        tls=config.security.server_tls,
    )
    return running, runtime


def register_forever(config: TrainerConfig, port: int, runtime: TrainerRuntime, stop: threading.Event) -> None:
    """Register with the scheduler, then heartbeat until `stop`; survives a scheduler that is down."""
    host, _, _ = config.advertise.rpartition(":")
    stub = sched_grpc.SchedulerServiceStub(
        channel(config.scheduler_address, config.security.client_tls, config.security.internal_credentials()))
    request = sched.RegisterTrainerRequest(
        trainer_id=config.trainer_id, address=f"{host}:{port}", flavor_ids=list(config.flavors),
        slots=config.slots, device=runtime.device_description,
    )
    registered = False
    while not stop.is_set():
        try:
            stub.RegisterTrainer(request, timeout=5)
            if not registered:
                log.info("trainer.registered", scheduler=config.scheduler_address, address=request.address)
            registered = True
        except grpc.RpcError as exc:
            if registered:
                log.warning("trainer.heartbeat_failed", code=exc.code().name)
            registered = False
        stop.wait(config.heartbeat_seconds)


def main() -> None:
    logs.configure("trainer")
    config = TrainerConfig.from_env()
    running, runtime = build(config)
    metrics.serve(config.metrics_listen, metrics.TrainerCollector(runtime))
    log.info("trainer.listening", port=running.port, listen=config.listen, device=runtime.device_description)
    stop = threading.Event()
    if config.scheduler_address:
        threading.Thread(target=register_forever, args=(config, running.port, runtime, stop), daemon=True).start()
    serve_until_signal(running, on_stop=stop.set)
    runtime.close()  # the served models' batching threads


if __name__ == "__main__":
    main()
