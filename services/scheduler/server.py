"""Scheduler process: configuration, server factory, main."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainyard import log as logs
from trainyard import metrics
from trainyard.config import SecurityConfig, env_float, env_int, env_str
from trainyard.rpc import RunningServer, create_server, serve_until_signal
from trainyard.scheduler.v1 import scheduler_service_pb2, scheduler_service_pb2_grpc
from trainyard.services.scheduler.clients import DatasetClient, TrainerClient
from trainyard.services.scheduler.flavors import DEFAULT_FLAVORS_FILE, FlavorCatalog
from trainyard.services.scheduler.service import SchedulerService, SchedulerSettings
from trainyard.services.scheduler.servicer import SchedulerServicer
from trainyard.services.scheduler.store import SchedulerStore

SERVICE_NAME = scheduler_service_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name


@dataclass(frozen=True)
class SchedulerConfig:
    listen: str
    data_dir: Path
    dataset_address: str
    flavors_file: Path
    settings: SchedulerSettings
    security: SecurityConfig
    metrics_listen: str = ""  # /metrics address; empty: off
    rpc_threads: int = 64  # threads for unary calls; watch streams are coroutines and need none

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SchedulerConfig:
        env = os.environ if env is None else env
        defaults = SchedulerSettings()
        dataset_check_seconds = env_float(env, "TRAINYARD_DATASET_CHECK_SECONDS", defaults.dataset_check_seconds)
        if dataset_check_seconds <= 0:
            raise SystemExit(f"TRAINYARD_DATASET_CHECK_SECONDS={dataset_check_seconds:g}: must be more than 0 seconds")
        return cls(
            listen=env_str(env, "TRAINYARD_SCHEDULER_LISTEN", "127.0.0.1:50052"),
            data_dir=Path(env_str(env, "TRAINYARD_DATA_DIR", ".trainyard")) / "scheduler",
            dataset_address=env_str(env, "TRAINYARD_DATASET_ADDRESS", "127.0.0.1:50051"),
            flavors_file=Path(env_str(env, "TRAINYARD_FLAVORS_FILE", str(DEFAULT_FLAVORS_FILE))),
            metrics_listen=env_str(env, "TRAINYARD_SCHEDULER_METRICS_LISTEN", ""),
            rpc_threads=env_int(env, "TRAINYARD_SCHEDULER_RPC_THREADS", 64),
            security=SecurityConfig.from_env(env),
            settings=SchedulerSettings(
                minute_seconds=env_float(env, "TRAINYARD_MINUTE_SECONDS", defaults.minute_seconds),
                stop_grace_seconds=env_float(env, "TRAINYARD_STOP_GRACE_SECONDS", defaults.stop_grace_seconds),
                heartbeat_timeout_seconds=env_float(env, "TRAINYARD_HEARTBEAT_TIMEOUT_SECONDS", defaults.heartbeat_timeout_seconds),
                event_retention_seconds=env_float(env, "TRAINYARD_EVENT_RETENTION_DAYS", defaults.event_retention_seconds / 86400) * 86400,
                job_creations_per_minute=env_int(env, "TRAINYARD_JOB_CREATIONS_PER_MINUTE", defaults.job_creations_per_minute),
                dataset_check_seconds=dataset_check_seconds,
            ),
        )


def build(config: SchedulerConfig) -> tuple[RunningServer, SchedulerService]:
    service = SchedulerService(
        SchedulerStore(config.data_dir / "scheduler.db"),
        FlavorCatalog.load(config.flavors_file),
        DatasetClient(config.dataset_address, config.security),
        TrainerClient(config.security),
        config.settings,
    )
    running = create_server(
        config.listen,
        lambda server: scheduler_service_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerServicer(service), server),
        [SERVICE_NAME],
        authenticator=config.security.authenticator(internal_methods=[f"/{SERVICE_NAME}/RegisterTrainer"]),
        tls=config.security.server_tls,
        max_workers=config.rpc_threads,
        use_asyncio=True,  # watch streams are coroutines: a thousand watchers need no thousand threads
    )
    service.start()
    return running, service


def main() -> None:
    logs.configure("scheduler")
    config = SchedulerConfig.from_env()
    running, service = build(config)
    metrics.serve(config.metrics_listen, metrics.SchedulerCollector(service))
    logs.get_logger(__name__).info("scheduler.listening", port=running.port, listen=config.listen)
    serve_until_signal(running, on_stop=service.stop)


if __name__ == "__main__":
    main()
