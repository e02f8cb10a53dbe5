"""What the scheduler benchmarks share: the benchmark flavor, a fake trainer, a stack around it, percentiles.

The stack is the real thing (S3, the dataset service and the scheduler as
processes on loopback); only the trainer is fake: a real gRPC server in the
benchmark's process that finishes each job at once, with a model, so that the
figures measure the scheduler and not training.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager, suppress
from pathlib import Path

import grpc

from trainyard.auth import CallCredentials
from trainyard.common.v1 import training_pb2 as common
from trainyard.rpc import channel
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc
from trainyard.stack.local import LocalStack, StackSettings
from trainyard.timeconv import timestamp
from trainyard.trainer.v1 import trainer_pb2 as tr
from trainyard.trainer.v1 import trainer_service_pb2 as trs
from trainyard.trainer.v1 import trainer_service_pb2_grpc as trs_grpc

FLAVOR = "bench"
FLAVORS = f"""
default_flavor = "{FLAVOR}"
[[flavors]]
id = "{FLAVOR}"
display_name = "Benchmark"
kind = "pay_per_use"
gpus_per_job = 1
price_per_hour = 1.0
tenant_concurrency_quota = 0
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class FakeTrainer(trs_grpc.TrainerServiceServicer):
    """Records when a job arrives and finishes it with a model.

    Jobs that `streams(job_id)` picks first wait for `go`, then stream
    `progress_events` progress events `interval` seconds apart.
    """

    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        self.streams: Callable[[str], bool] = lambda job_id: False
        self.go = threading.Event()
        self.go.set()
        self.progress_events = 0
        self.interval = 0.2

    def RunTraining(self, request, context):
        job_id = request.spec.job_id
        self.received.setdefault(job_id, time.time())
        sequence = request.after_sequence
        if self.streams(job_id):
            self.go.wait()
            for _ in range(self.progress_events):
                sequence += 1
                yield trs.RunTrainingResponse(event=tr.TrainerEvent(
                    sequence=sequence, time=timestamp(time.time()), progress=common.TrainingProgress(epoch=1)))
                time.sleep(self.interval)
        yield trs.RunTrainingResponse(event=tr.TrainerEvent(sequence=sequence + 1, time=timestamp(time.time()), outcome=tr.TrainingOutcome(
            stop_reason=common.STOP_REASON_CONVERGED, artifact_prefix=f"bench/{job_id}/")))

    def StopTraining(self, request, context):
        return trs.StopTrainingResponse(stopping=False)


@contextmanager
def fake_trainer_stack(folder: Path, extra_env: dict[str, str] | None = None,
                       trainer_threads: int = 64) -> Iterator[tuple[LocalStack, FakeTrainer]]:
    """S3, dataset service and scheduler (flavor FLAVOR) in `folder`, and a FakeTrainer registered for
    FLAVOR with unlimited slots; its heartbeat keeps it registered however long the benchmark runs."""
    trainer = FakeTrainer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=trainer_threads))
    trs_grpc.add_TrainerServiceServicer_to_server(trainer, server)
    trainer_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    flavors = folder / "flavors.toml"
    flavors.write_text(FLAVORS)
    stack = LocalStack(StackSettings(data_dir=folder / "stack", extra_env={
        "TRAINYARD_FLAVORS_FILE": str(flavors), "TRAINYARD_LOG_LEVEL": "warning", **(extra_env or {})}))
    stopping = threading.Event()
    try:
        stack.start(services=("dataset", "scheduler"))
        internal = sc_grpc.SchedulerServiceStub(channel(
            stack.address("scheduler"), credentials=CallCredentials(stack.internal_token_file.read_text().strip())))
        registration = sc.RegisterTrainerRequest(trainer_id="fake", address=f"127.0.0.1:{trainer_port}",
                                                 flavor_ids=[FLAVOR], slots=100_000, device="none")
        internal.RegisterTrainer(registration, timeout=30)

        def heartbeat() -> None:
            while not stopping.wait(stack.settings.heartbeat_seconds):
                with suppress(grpc.RpcError):  # a missed beat; the scheduler waits heartbeat_timeout_seconds
                    internal.RegisterTrainer(registration, timeout=10)

        threading.Thread(target=heartbeat, name="fake-trainer-heartbeat", daemon=True).start()
        yield stack, trainer
    finally:
        stopping.set()
        stack.stop()
        server.stop(0)
