"""Load benchmark: uploaders, job creations and watchers at once against one stack, and nothing lost.

Runs S3, the dataset service and the scheduler as real processes on loopback,
with the fake trainer of bench/harness.py (each job streams a few progress
events, then ends with a model version, in about a second), and several
tenants, each with its own API key. At once:

- `--uploaders` uploaders (threads in `--upload-processes` child processes),
  each uploading batches of digit PNGs to a dataset of its own through the
  gRPC upload, from the start until the other two loads have ended;
- `--jobs` CreateTrainingJob calls (`--creators` at a time, spread over the
  tenants, each with a request id and retried with it after an error) on each
  tenant's dataset that has a published version;
- `--watchers` WatchTrainingJob streams (grpc.aio, in `--watch-processes`
  child processes) following those jobs, opened as each job is created, to
  the final event.

The per-tenant rate limit on job creations stays at its default (60 a minute):
the creations are spread over the tenants, as real traffic would be, so the
limit is exercised but not hit; sizes that would hit it are refused.

Baselines in the same run, before: the uploads alone (for `--baseline-seconds`),
then the jobs and watchers alone, with the same sizes. After each run it checks
that nothing was lost: every image acknowledged is listed in its dataset; every
job exists once for its tenant (and for no other), ends, and has a model
version; every watcher saw sequences 1..N of its job exactly once, ending on
the final event. Everything is bounded by `--timeout`.

    python bench/load.py [--uploaders 50] [--jobs 200] [--watchers 1000] [--tenants 10]

Writes bench/results/load.json (or `--output`); exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from harness import FLAVOR, fake_trainer_stack, pct

from trainyard.auth import CallCredentials
from trainyard.errors import NotFound, TrainyardError, Unauthenticated
from trainyard.sample_data import digit_files
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc
from trainyard.sdk import Client
from trainyard.stack.local import LocalStack

RESULTS = Path(__file__).resolve().parent / "results" / "load.json"
CREATIONS_PER_TENANT_MINUTE = 60  # the scheduler's default limit, left on
CALL_TIMEOUT = 60.0
CHILDREN: list[subprocess.Popen] = []  # killed on the way out, whatever happens


class LoadTimeout(Exception):
    pass


def ms(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": pct(values, 50) * 1000, "p99": pct(values, 99) * 1000, "max": max(values) * 1000}


def add(counter: dict[str, int], code: str) -> None:
    counter[code] = counter.get(code, 0) + 1


def total(counters) -> dict[str, int]:
    """Error counts by status code, summed."""
    return dict(sum((Counter(c) for c in counters), Counter()))


# --- child processes ---------------------------------------------------------------

class Child:
    """This script as `--child upload|watch`: a JSON config line on its stdin, "ready" back, then
    lines of work; when its stdin closes it finishes and writes its records to a JSON file."""

    def __init__(self, kind: str, config: dict, result: Path) -> None:
        self.kind, self.result = kind, result
        self.process = subprocess.Popen([sys.executable, __file__, "--child", kind, str(result)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        CHILDREN.append(self.process)
        self._lock = threading.Lock()
        self.send(json.dumps(config))

    def ready(self) -> None:
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {self.kind} child exited with {self.process.wait()} before it was ready")

    def send(self, line: str) -> None:
        with self._lock:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()

    def finish(self, timeout: float) -> list[dict]:
        self.process.stdin.close()
        if self.process.wait(timeout) != 0:
            raise RuntimeError(f"the {self.kind} child exited with {self.process.returncode}")
        return json.loads(self.result.read_text())


def upload_child(result: Path) -> None:
    """Uploader threads, one per (dataset, key): batch after batch from "go" until stdin closes."""
    config = json.loads(sys.stdin.readline())
    files = digit_files()
    go, stop = threading.Event(), threading.Event()
    records: list[dict] = []

    def uploader(index: int, dataset: str, key: str) -> None:
        client = Client(config["dataset"], config["scheduler"], api_key=key, retries=0)
        record = {"dataset": dataset, "calls": [], "errors": {}, "acknowledged": [], "stored": 0, "duplicates": 0,
                  "rejected": 0, "bytes": 0, "unacknowledged": 0}
        position = index * 97  # each uploader walks the digits from its own place
        go.wait()
        record["start"] = time.time()
        while True:
            batch = [files[(position + k) % len(files)] for k in range(config["batch"])]
            position += len(batch)
            started = time.perf_counter()
            try:
                summary = client.upload_images(dataset, batch, timeout=CALL_TIMEOUT)
            except TrainyardError as exc:
                add(record["errors"], exc.code)
                record["unacknowledged"] += len(batch)
            except Exception as exc:  # a client-side failure is an error of the load too
                add(record["errors"], type(exc).__name__)
                record["unacknowledged"] += len(batch)
            else:
                record["calls"].append(time.perf_counter() - started)
                record["stored"] += summary.stored
                record["duplicates"] += summary.duplicates
                record["rejected"] += summary.rejected
                record["bytes"] += sum(len(data) for _, _, data in batch)
                record["acknowledged"] += [r.image_id for r in summary.results if r.status in ("stored", "duplicate")]
            if stop.is_set():
                break
        record["end"] = time.time()
        records.append(record)

    threads = [threading.Thread(target=uploader, args=(i, dataset, key)) for i, (dataset, key) in enumerate(config["uploaders"])]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    if sys.stdin.readline().strip() == "go":
        go.set()
    sys.stdin.readline()  # until stdin closes
    stop.set()
    go.set()
    for thread in threads:
        thread.join()
    result.write_text(json.dumps(records))


async def follow(stub, job_id: str, metadata) -> dict:
    """One watcher: the job's events to the final one, resuming from the last sequence after a break.

    An event recorded after the watch began is live and its delay (receipt minus the time the
    scheduler recorded it) counts; one recorded before is a replay."""
    record = {"job": job_id, "sequences": [], "final": False, "delays": [], "replayed": 0, "errors": {}}
    opened = time.time()
    while not record["final"] and sum(record["errors"].values()) <= 5:
        after = record["sequences"][-1] if record["sequences"] else 0
        try:
            async for response in stub.WatchTrainingJob(sc.WatchTrainingJobRequest(job_id=job_id, after_sequence=after), metadata=metadata):
                received, event = time.time(), response.event
                recorded = event.time.ToNanoseconds() / 1e9
                record["sequences"].append(event.sequence)
                if recorded >= opened:
                    record["delays"].append(received - recorded)
                else:
                    record["replayed"] += 1
                if event.final:
                    record["final"] = True
                    break
            else:
                add(record["errors"], "ENDED_BEFORE_FINAL")
        except grpc.aio.AioRpcError as exc:
            add(record["errors"], exc.code().name)
            await asyncio.sleep(0.5)
    return record


async def follow_jobs(config: dict) -> list[dict]:
    """Watchers for the "<job> <tenant> <count>" lines arriving on stdin, all on one channel."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    async with grpc.aio.insecure_channel(config["scheduler"]) as ch:
        stub = sc_grpc.SchedulerServiceStub(ch)
        threading.Thread(target=read, daemon=True).start()
        print("ready", flush=True)
        tasks = []
        while (line := await lines.get()) is not None:
            job_id, tenant, count = line.split()
            metadata = CallCredentials(config["keys"][int(tenant)]).metadata()
            tasks += [asyncio.create_task(follow(stub, job_id, metadata)) for _ in range(int(count))]
        return list(await asyncio.gather(*tasks))


def watch_child(result: Path) -> None:
    config = json.loads(sys.stdin.readline())
    result.write_text(json.dumps(asyncio.run(follow_jobs(config))))


# --- the loads ----------------------------------------------------------------------

@dataclass
class Tenant:
    name: str
    key: str
    client: Client  # no retries: every error is counted
    dataset: str  # has version v1; the jobs train on it


def make_tenants(stack: LocalStack, count: int) -> list[Tenant]:
    files = digit_files(per_class=5)
    tenants = []
    for i in range(count):
        key = stack.create_api_key(f"tenant-{i}")
        client = stack.client(api_key=key, retries=0)
        for _ in range(100):  # the services read new keys within a second
            try:
                client.list_datasets(timeout=CALL_TIMEOUT)
                break
            except Unauthenticated:
                time.sleep(0.1)
        dataset = client.create_dataset("train", timeout=CALL_TIMEOUT).id
        client.upload_images(dataset, files, timeout=CALL_TIMEOUT)
        client.publish_version(dataset, "v1", timeout=CALL_TIMEOUT)
        tenants.append(Tenant(f"tenant-{i}", key, client, dataset))
    return tenants


def create_jobs(tenants: list[Tenant], count: int, creators: int, created: Callable[[int, int, str], None]) -> list[dict]:
    """`count` creations, job i for tenant i mod T; a failed call is retried with its request id."""

    def create(index: int) -> dict:
        tenant = index % len(tenants)
        record = {"tenant": tenant, "request_id": uuid.uuid4().hex, "job": "", "latency": None, "errors": []}
        for attempt in range(4):
            started = time.perf_counter()
            try:
                job = tenants[tenant].client.create_training_job(
                    tenants[tenant].dataset, dataset_version="v1", flavor=FLAVOR, request_id=record["request_id"],
                    timeout=CALL_TIMEOUT)
            except TrainyardError as exc:
                record["errors"].append(exc.code)
                time.sleep(0.2 * 2**attempt)
                continue
            record["latency"], record["job"] = time.perf_counter() - started, job.id
            created(index, tenant, job.id)
            break
        return record

    with ThreadPoolExecutor(creators) as pool:
        return list(pool.map(create, range(count)))


class Run:
    """One run of some of the loads on the stack, its figures and its checks."""

    def __init__(self, name: str, stack: LocalStack, tenants: list[Tenant], args, folder: Path, jobs_so_far: dict[int, set]) -> None:
        self.name, self.stack, self.tenants, self.args, self.folder = name, stack, tenants, args, folder
        self.jobs_so_far = jobs_so_far  # every job created in this process, by tenant: no tenant may list others

    def run(self, uploads: bool, jobs: bool) -> dict:
        args, tenants = self.args, self.tenants
        addresses = {"dataset": self.stack.address("dataset"), "scheduler": self.stack.address("scheduler")}
        targets = [(u % len(tenants), tenants[u % len(tenants)].client.create_dataset(f"{self.name}-upload-{u}", timeout=CALL_TIMEOUT).id)
                   for u in range(args.uploaders if uploads else 0)]
        uploaders = [
            Child("upload", {**addresses, "batch": args.batch,
                             "uploaders": [[dataset, tenants[t].key] for t, dataset in targets[i::args.upload_processes]]},
                  self.folder / f"{self.name}-upload-{i}.json")
            for i in range(min(args.upload_processes, len(targets)))
        ]
        watchers = [Child("watch", {**addresses, "keys": [t.key for t in tenants]}, self.folder / f"{self.name}-watch-{i}.json")
                    for i in range(min(args.watch_processes, args.watchers) if jobs else 0)]
        for child in uploaders + watchers:
            child.ready()

        def created(index: int, tenant: int, job_id: str) -> None:
            """Hand the job's watchers to the watch processes, round robin over all watchers."""
            share, extra = divmod(args.watchers, args.jobs)
            first, count = index * share + min(index, extra), share + (index < extra)
            for child, n in Counter((first + k) % len(watchers) for k in range(count)).items():
                watchers[child].send(f"{job_id} {tenant} {n}")

        started = time.time()
        for child in uploaders:
            child.send("go")
        result: dict = {}
        if jobs:
            creations = create_jobs(tenants, args.jobs, args.creators, created)
            created_at = time.time()
            watches = [w for child in watchers for w in child.finish(self.remaining())]
            watched_at = time.time()
        else:
            time.sleep(args.baseline_seconds)
        records = [r for child in uploaders for r in child.finish(self.remaining())]
        result["seconds"] = time.time() - started
        result["load_average_1m"] = os.getloadavg()[0]  # runnable processes, against os.cpu_count()
        checks: dict[str, bool] = {}
        if uploads:
            result["uploads"] = self.upload_figures(records, targets)
            checks["uploads_all_listed"] = result["uploads"].pop("passed")
        if jobs:
            result["jobs"], listed = self.job_figures(creations, created_at - started)
            checks["jobs_exist_once_and_end"] = result["jobs"].pop("passed")
            checks["completed_jobs_have_model_versions"] = result["jobs"].pop("model_versions_passed")
            checks["tenants_see_only_their_jobs"] = result["jobs"].pop("isolation_passed")
            result["watchers"] = self.watch_figures(watches, listed, watched_at - started)
            checks["watchers_saw_every_event_once"] = result["watchers"].pop("passed")
        result["checks"] = checks
        return result

    def remaining(self) -> float:
        return max(1.0, self.args.deadline - time.monotonic())

    # figures and checks ------------------------------------------------------------
    def upload_figures(self, records: list[dict], targets: list[tuple[int, str]]) -> dict:
        tenant_of = {dataset: t for t, dataset in targets}
        missing = unexpected = listed_total = 0
        passed = len(records) == len(targets)
        for record in records:
            client = self.tenants[tenant_of[record["dataset"]]].client
            listed = {image.id for image in client.list_images(record["dataset"], timeout=CALL_TIMEOUT)}
            acknowledged = set(record["acknowledged"])
            listed_total += len(listed)
            missing += len(acknowledged - listed)
            unexpected += len(listed - acknowledged)
            count = client.get_dataset(record["dataset"], timeout=CALL_TIMEOUT).image_count
            # files of a failed call may be recorded (never half of one): at most that many extra
            passed &= acknowledged <= listed and len(listed - acknowledged) <= record["unacknowledged"] and count == len(listed)
        calls = [c for r in records for c in r["calls"]]
        images = sum(r["stored"] + r["duplicates"] for r in records)
        megabytes = sum(r["bytes"] for r in records) / 1e6
        seconds = (max(r["end"] for r in records) - min(r["start"] for r in records)) if records else 0.0
        return {
            "uploaders": len(targets), "calls": len(calls), "images": images,
            "stored": sum(r["stored"] for r in records), "duplicates": sum(r["duplicates"] for r in records),
            "rejected": sum(r["rejected"] for r in records), "megabytes": megabytes, "seconds": seconds,
            "images_per_s": images / seconds if seconds else 0.0, "mb_per_s": megabytes / seconds if seconds else 0.0,
            "call_ms": ms(calls), "errors": total(r["errors"] for r in records), "unacknowledged_images": sum(r["unacknowledged"] for r in records),
            "acknowledged_distinct_images": sum(len(set(r["acknowledged"])) for r in records),
            "listed_images": listed_total, "acknowledged_missing": missing, "listed_unacknowledged": unexpected,
            "passed": passed,
        }

    def job_figures(self, creations: list[dict], seconds: float) -> tuple[dict, dict]:
        tenants = self.tenants
        for record in creations:
            if record["job"]:
                self.jobs_so_far.setdefault(record["tenant"], set()).add(record["job"])
        ids = [r["job"] for r in creations if r["job"]]
        # every job is watched to its end unless there are fewer watchers than jobs: wait for the rest
        while True:
            listed = {j.id: (t, j) for t, tenant in enumerate(tenants) for j in tenant.client.list_jobs(timeout=CALL_TIMEOUT)}
            if all(i in listed and listed[i][1].final for i in ids) or time.monotonic() > self.args.deadline:
                break
            time.sleep(0.5)
        jobs = {i: listed[i][1] for i in ids if i in listed}
        states = Counter(j.state for j in jobs.values())
        exist_once = (len(ids) == len(creations) == len(set(ids)) == len(jobs)
                      and all(listed[r["job"]][0] == r["tenant"] for r in creations)
                      and all(j.final for j in jobs.values()))
        versions_ok = True
        for t, tenant in enumerate(tenants):
            versions = {v.version: v.job_id for v in tenant.client.list_model_versions(tenant.dataset, timeout=CALL_TIMEOUT)}
            versions_ok &= all(j.state != "completed" or versions.get(j.model_version) == j.id
                               for j in jobs.values() if listed[j.id][0] == t)
        isolation = all({i for i, (owner, _) in listed.items() if owner == t} == self.jobs_so_far.get(t, set())
                        for t in range(len(tenants)))
        if len(tenants) > 1 and ids:  # another tenant's job is NOT_FOUND, as if it did not exist
            other = tenants[(creations[0]["tenant"] + 1) % len(tenants)].client
            try:
                other.get_job(ids[0], timeout=CALL_TIMEOUT)
                isolation = False
            except NotFound:
                pass
        latencies = [r["latency"] for r in creations if r["latency"] is not None]
        return {
            "jobs": len(creations), "created": len(set(ids)), "seconds": seconds,
            "creations_per_s": len(set(ids)) / seconds if seconds else 0.0, "create_ms": ms(latencies),
            "errors": total(Counter(r["errors"]) for r in creations), "retried": sum(1 for r in creations if r["errors"]), "states": dict(states),
            "passed": exist_once, "model_versions_passed": versions_ok and states.get("completed", 0) == len(ids),
            "isolation_passed": isolation,
        }, {i: j for i, (_, j) in listed.items()}

    def watch_figures(self, watches: list[dict], jobs: dict, seconds: float) -> dict:
        bad = [w["job"] for w in watches
               if not (w["final"] and w["job"] in jobs and w["sequences"] == list(range(1, jobs[w["job"]].last_sequence + 1)))]
        delays = [d for w in watches for d in w["delays"]]
        return {
            "watchers": len(watches), "seconds": seconds, "events_delivered": sum(len(w["sequences"]) for w in watches),
            "live_events": len(delays), "replayed_events": sum(w["replayed"] for w in watches),
            "delivery_delay_ms": ms(delays), "errors": total(w["errors"] for w in watches), "watchers_failing_check": len(bad),
            "failing_jobs": sorted(set(bad))[:10], "passed": len(watches) == self.args.watchers and not bad,
        }


# --- report -------------------------------------------------------------------------

def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def lookup(run, path: tuple[str, ...]):
    """run[path[0]][path[1]]…, or None where a level is missing."""
    for key in path:
        run = run.get(key) if isinstance(run, dict) else None
    return run


def compare(alone: dict, at_once: dict) -> dict:
    figures = {
        "upload_images_per_s": ("uploads", "images_per_s"), "upload_call_p99_ms": ("uploads", "call_ms", "p99"),
        "creations_per_s": ("jobs", "creations_per_s"), "create_p99_ms": ("jobs", "create_ms", "p99"),
        "delivery_p50_ms": ("watchers", "delivery_delay_ms", "p50"), "delivery_p99_ms": ("watchers", "delivery_delay_ms", "p99"),
    }
    return {name: ratio(lookup(at_once, path), lookup(alone, path)) for name, path in figures.items()}


def table(results: dict) -> str:
    alone = {**results["alone"].get("uploads", {}), **results["alone"].get("jobs_and_watchers", {})}
    at_once = results["at_once"]
    rows = [
        ("uploads: images/s", ("uploads", "images_per_s")), ("uploads: MB/s", ("uploads", "mb_per_s")),
        ("uploads: call p99 ms", ("uploads", "call_ms", "p99")), ("uploads: images acknowledged", ("uploads", "images")),
        ("jobs: creations/s", ("jobs", "creations_per_s")), ("jobs: CreateTrainingJob p50 ms", ("jobs", "create_ms", "p50")),
        ("jobs: CreateTrainingJob p99 ms", ("jobs", "create_ms", "p99")),
        ("watch: delivery delay p50 ms", ("watchers", "delivery_delay_ms", "p50")),
        ("watch: delivery delay p99 ms", ("watchers", "delivery_delay_ms", "p99")),
        ("watch: events delivered", ("watchers", "events_delivered")),
        ("watch: of them live", ("watchers", "live_events")),
    ]

    def cell(run: dict, path) -> str:
        value = lookup(run, path)
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"
        return "-" if value is None else f"{value:,}"

    lines = [f"{'':34}{'alone':>14}{'at once':>14}", *(f"{label:34}{cell(alone, p):>14}{cell(at_once, p):>14}" for label, p in rows)]
    for load in ("uploads", "jobs", "watchers"):
        lines.append(f"{load + ': errors':34}{json.dumps(alone.get(load, {}).get('errors')):>14}"
                     f"{json.dumps(at_once.get(load, {}).get('errors')):>14}")
    lines.append("")
    lines += [f"{name:62}{'pass' if ok else 'FAIL'}" for name, ok in results["checks"].items()]
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        {"upload": upload_child, "watch": watch_child}[sys.argv[2]](Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploaders", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=10, help="API keys; uploaders and jobs are spread over them")
    parser.add_argument("--batch", type=int, default=20, help="images per upload call")
    parser.add_argument("--creators", type=int, default=16, help="job creations in flight at once")
    parser.add_argument("--progress-events", type=int, default=5, help="progress events of each job, 0.2 s apart")
    parser.add_argument("--upload-processes", type=int, default=2)
    parser.add_argument("--watch-processes", type=int, default=2)
    parser.add_argument("--baseline-seconds", type=float, default=10.0, help="how long the uploads run alone")
    parser.add_argument("--no-baseline", action="store_true", help="skip the loads alone")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before the whole run fails")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if min(args.uploaders, args.jobs, args.tenants, args.batch, args.creators, args.upload_processes, args.watch_processes) < 1 or args.watchers < 0:
        parser.error("sizes must be at least 1 (watchers at least 0)")
    runs_of_jobs = 1 if args.no_baseline else 2
    if runs_of_jobs * math.ceil(args.jobs / args.tenants) > CREATIONS_PER_TENANT_MINUTE:
        parser.error(f"{runs_of_jobs * math.ceil(args.jobs / args.tenants)} job creations per tenant within a minute would pass "
                     f"the scheduler's limit of {CREATIONS_PER_TENANT_MINUTE}; add --tenants")
    args.deadline = time.monotonic() + args.timeout

    def expired(signum, frame):
        raise LoadTimeout(f"the run took longer than --timeout {args.timeout:g} s")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(math.ceil(args.timeout))
    started = time.monotonic()
    results: dict = {
        "machine": {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "python": platform.python_version(), "load_average_1m_at_start": os.getloadavg()[0]},
        "sizes": {k: v for k, v in vars(args).items() if k not in ("deadline", "output")},
        "rate_limit": f"job creations per tenant per minute left at the default {CREATIONS_PER_TENANT_MINUTE}; "
                      "creations are spread over the tenants",
        "alone": {}, "at_once": {}, "checks": {}, "timed_out": False,
    }
    try:
        with tempfile.TemporaryDirectory() as tmp, fake_trainer_stack(Path(tmp), trainer_threads=args.jobs + 32) as (stack, trainer):
            try:
                trainer.streams, trainer.progress_events = (lambda job_id: True), args.progress_events
                tenants = make_tenants(stack, args.tenants)
                jobs_so_far: dict[int, set] = {}
                if not args.no_baseline:
                    results["alone"]["uploads"] = Run("alone-up", stack, tenants, args, Path(tmp), jobs_so_far).run(uploads=True, jobs=False)
                    results["alone"]["jobs_and_watchers"] = Run("alone-jobs", stack, tenants, args, Path(tmp), jobs_so_far).run(uploads=False, jobs=True)
                results["at_once"] = Run("at-once", stack, tenants, args, Path(tmp), jobs_so_far).run(uploads=True, jobs=True)
            finally:
                signal.alarm(0)  # no timeout during the clean-up: it stops every process it started
                for process in CHILDREN:
                    if process.poll() is None:
                        process.kill()
                        process.wait()
    except LoadTimeout as exc:
        results["timed_out"], results["error"] = True, str(exc)
    for name, run in [("at once", results["at_once"]), *((f"alone ({k})", r) for k, r in results["alone"].items())]:
        results["checks"] |= {f"{name}: {check}": ok for check, ok in run.get("checks", {}).items()}
    results["checks"]["finished within --timeout"] = not results["timed_out"]
    if results["alone"] and results["at_once"]:
        alone = {**results["alone"]["uploads"], **results["alone"]["jobs_and_watchers"]}
        results["at_once_vs_alone"] = compare(alone, results["at_once"])
    results["passed"] = all(results["checks"].values()) and "at_once" in results and bool(results["at_once"])
    results["seconds_total"] = time.monotonic() - started
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\n{'passed' if results['passed'] else 'FAILED'} in {results['seconds_total']:.0f} s; wrote {args.output}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
