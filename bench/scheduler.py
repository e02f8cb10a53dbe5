"""Scheduler benchmark: dispatch latency, event fan-out to 1,000 watchers, creations per second.

Runs S3, the dataset service and the scheduler as real processes on loopback,
and a fake trainer (a real gRPC server in this process) that records when each
job reaches it. Baselines measured in the same run: a bare unary round trip to
the scheduler (the floor under dispatch latency and creation rate) and the
event delay seen by a single watcher (the floor under fan-out).

    python bench/scheduler.py [--watchers 1000] [--jobs 50] [--creations 500]

Writes bench/results/scheduler.json. Targets: dispatch p50 <= 50 ms,
fan-out p99 <= 250 ms, >= 100 creations/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from trainyard.auth import CallCredentials
from trainyard.common.v1 import training_pb2 as common
from trainyard.rpc import channel
from trainyard.sample_data import digit_files
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc
from trainyard.stack.local import LocalStack, StackSettings
from trainyard.timeconv import timestamp
from trainyard.trainer.v1 import trainer_pb2 as tr
from trainyard.trainer.v1 import trainer_service_pb2 as trs
from trainyard.trainer.v1 import trainer_service_pb2_grpc as trs_grpc

RESULTS = Path(__file__).resolve().parent / "results" / "scheduler.json"
FLAVORS = """
default_flavor = "bench"
[[flavors]]
id = "bench"
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
    """Records when a job arrives; finishes at once, or streams `progress_events` first for the fan-out job."""

    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        self.fanout_job: str | None = None
        self.fanout_go = threading.Event()
        self.progress_events = 0

    def RunTraining(self, request, context):
        job_id = request.spec.job_id
        self.received.setdefault(job_id, time.time())
        sequence = request.after_sequence
        if job_id == self.fanout_job:
            self.fanout_go.wait()
            for _ in range(self.progress_events):
                sequence += 1
                yield trs.RunTrainingResponse(event=tr.TrainerEvent(
                    sequence=sequence, time=timestamp(time.time()), progress=common.TrainingProgress(epoch=1)))
                time.sleep(0.2)
        yield trs.RunTrainingResponse(event=tr.TrainerEvent(sequence=sequence + 1, time=timestamp(time.time()), outcome=tr.TrainingOutcome(
            stop_reason=common.STOP_REASON_CONVERGED, artifact_prefix=f"bench/{job_id}/")))

    def StopTraining(self, request, context):
        return trs.StopTrainingResponse(stopping=False)


async def watch_delays(address: str, job_id: str, watchers: int, started: threading.Event) -> list[float]:
    """Open `watchers` streams at once (one asyncio thread), return every progress event's delay."""
    delays: list[float] = []
    credentials = CallCredentials(os.environ["TRAINYARD_API_KEY"]).metadata()
    async with grpc.aio.insecure_channel(address) as ch:
        stub = sc_grpc.SchedulerServiceStub(ch)

        async def one() -> None:
            async for response in stub.WatchTrainingJob(sc.WatchTrainingJobRequest(job_id=job_id), metadata=credentials):
                event = response.event
                if event.WhichOneof("kind") == "progress":
                    delays.append(time.time() - event.time.ToNanoseconds() / 1e9)
                if event.final:
                    return

        tasks = [asyncio.create_task(one()) for _ in range(watchers)]
        await asyncio.sleep(1.0 + watchers / 500)  # let every stream open and replay
        started.set()
        await asyncio.gather(*tasks)
    return delays


def watcher_process(address: str, job_id: str, watchers: int) -> None:
    """Run in a child process: open the watchers, say "ready", print the delays as JSON."""
    ready = threading.Event()
    threading.Thread(target=lambda: (ready.wait(), print("ready", flush=True)), daemon=True).start()
    print(json.dumps(asyncio.run(watch_delays(address, job_id, watchers, ready))), flush=True)


def fanout(stub, scheduler_address: str, api_key: str, trainer: FakeTrainer, watchers: int, events: int, processes: int = 2) -> dict:
    """Watchers spread over client processes (each an asyncio loop), so the client side is not the bottleneck."""
    job = stub.CreateTrainingJob(sc.CreateTrainingJobRequest(dataset_id="bench", dataset_version="v1", flavor_id="bench")).training_job
    trainer.fanout_job, trainer.progress_events = job.id, events
    trainer.fanout_go.clear()
    processes = min(processes, watchers)
    children = [
        subprocess.Popen([sys.executable, __file__, "--watch-child", scheduler_address, job.id, str(watchers // processes + (i < watchers % processes))],
                         stdout=subprocess.PIPE, text=True, env={**os.environ, "TRAINYARD_API_KEY": api_key})
        for i in range(processes)
    ]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    trainer.fanout_go.set()
    delays = [d for child in children for d in json.loads(child.stdout.readline())]
    for child in children:
        child.wait()
    assert len(delays) == watchers * events, f"{len(delays)} of {watchers * events} progress events arrived"
    return {"watchers": watchers, "events": events, "p50_ms": pct(delays, 50) * 1000, "p99_ms": pct(delays, 99) * 1000}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--watch-child":
        watcher_process(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--creations", type=int, default=500)
    args = parser.parse_args()

    trainer = FakeTrainer()
    fake = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    trs_grpc.add_TrainerServiceServicer_to_server(trainer, fake)
    trainer_port = fake.add_insecure_port("127.0.0.1:0")
    fake.start()

    with tempfile.TemporaryDirectory() as tmp:
        flavors = Path(tmp) / "flavors.toml"
        flavors.write_text(FLAVORS)
        stack = LocalStack(StackSettings(data_dir=Path(tmp) / "stack", extra_env={
            "TRAINYARD_FLAVORS_FILE": str(flavors), "TRAINYARD_LOG_LEVEL": "warning",
            "TRAINYARD_JOB_CREATIONS_PER_MINUTE": "0"}))  # measures the scheduler, not the per-tenant rate limit
        stack.start(services=("dataset", "scheduler"))
        try:
            client = stack.client()
            ds = client.create_dataset("bench")
            client.upload_images(ds.id, digit_files(per_class=5))
            client.publish_version(ds.id, "v1")
            stub = sc_grpc.SchedulerServiceStub(channel(stack.address("scheduler"), credentials=CallCredentials(stack.api_key)))
            internal = sc_grpc.SchedulerServiceStub(channel(
                stack.address("scheduler"), credentials=CallCredentials(stack.internal_token_file.read_text().strip())))
            internal.RegisterTrainer(sc.RegisterTrainerRequest(trainer_id="fake", address=f"127.0.0.1:{trainer_port}",
                                                           flavor_ids=["bench"], slots=100_000, device="none"))

            # baseline: a bare unary round trip
            round_trips = []
            for _ in range(200):
                t = time.perf_counter()
                stub.ListFlavors(sc.ListFlavorsRequest())
                round_trips.append(time.perf_counter() - t)

            # dispatch latency with idle capacity, one job at a time
            dispatch = []
            for _ in range(args.jobs):
                t = time.time()
                job = stub.CreateTrainingJob(sc.CreateTrainingJobRequest(dataset_id="bench", dataset_version="v1", flavor_id="bench")).training_job
                while job.id not in trainer.received:
                    time.sleep(0.0005)
                dispatch.append(trainer.received[job.id] - t)

            # creations per second, 16 clients at once
            def create(_: int) -> None:
                stub.CreateTrainingJob(sc.CreateTrainingJobRequest(dataset_id="bench", dataset_version="v1", flavor_id="bench"))

            with futures.ThreadPoolExecutor(16) as pool:
                t = time.perf_counter()
                list(pool.map(create, range(args.creations)))
                creation_seconds = time.perf_counter() - t
            with futures.ThreadPoolExecutor(16) as pool:
                t = time.perf_counter()
                list(pool.map(lambda _: stub.ListFlavors(sc.ListFlavorsRequest()), range(args.creations)))
                unary_seconds = time.perf_counter() - t
            time.sleep(2.0)  # let the dispatcher drain the created jobs

            single = fanout(stub, stack.address("scheduler"), stack.api_key, trainer, 1, 10)
            many = fanout(stub, stack.address("scheduler"), stack.api_key, trainer, args.watchers, 10)
        finally:
            stack.stop()
            fake.stop(0)

    results = {
        "baseline_round_trip_ms": {"p50": pct(round_trips, 50) * 1000, "p99": pct(round_trips, 99) * 1000},
        "dispatch_latency_ms": {"p50": pct(dispatch, 50) * 1000, "p99": pct(dispatch, 99) * 1000, "jobs": args.jobs},
        "dispatch_p50_vs_round_trip": statistics.median(dispatch) / statistics.median(round_trips),
        "creations_per_second": args.creations / creation_seconds,
        "unary_calls_per_second": args.creations / unary_seconds,
        "creations_vs_unary": (args.creations / creation_seconds) / (args.creations / unary_seconds),
        "fanout_single_watcher_ms": single,
        "fanout_ms": many,
        "fanout_p99_vs_single": many["p99_ms"] / max(single["p99_ms"], 1e-6),
        "targets": {
            "dispatch_p50_le_50ms": pct(dispatch, 50) * 1000 <= 50,
            "fanout_p99_le_250ms": many["p99_ms"] <= 250,
            "creations_ge_100_per_s": args.creations / creation_seconds >= 100,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
