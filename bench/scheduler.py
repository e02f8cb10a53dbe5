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
from harness import FakeTrainer, fake_trainer_stack, pct

from trainyard.auth import CallCredentials
from trainyard.rpc import channel
from trainyard.sample_data import digit_files
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc

RESULTS = Path(__file__).resolve().parent / "results" / "scheduler.json"


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
    trainer.streams, trainer.progress_events = (lambda job_id: job_id == job.id), events
    trainer.go.clear()
    processes = min(processes, watchers)
    children = [
        subprocess.Popen([sys.executable, __file__, "--watch-child", scheduler_address, job.id, str(watchers // processes + (i < watchers % processes))],
                         stdout=subprocess.PIPE, text=True, env={**os.environ, "TRAINYARD_API_KEY": api_key})
        for i in range(processes)
    ]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    trainer.go.set()
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

    with tempfile.TemporaryDirectory() as tmp, fake_trainer_stack(Path(tmp), extra_env={
            "TRAINYARD_JOB_CREATIONS_PER_MINUTE": "0"}) as (stack, trainer):  # measures the scheduler, not the per-tenant rate limit
        client = stack.client()
        ds = client.create_dataset("bench")
        client.upload_images(ds.id, digit_files(per_class=5))
        client.publish_version(ds.id, "v1")
        stub = sc_grpc.SchedulerServiceStub(channel(stack.address("scheduler"), credentials=CallCredentials(stack.api_key)))

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
