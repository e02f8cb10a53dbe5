"""Prometheus metrics of one process: RPCs, the scheduler's queues, the trainer's slots.

Each service process has one registry (`REGISTRY`) and, when its
`TRAINYARD_<SERVICE>_METRICS_LISTEN` is set, serves it over HTTP at `/metrics`
(`serve`, called from the service's `main`). What is exported:

* every process: `grpc_server_handled_total` and `grpc_server_handling_seconds`
  by service, method and status code, recorded by the RPC layer
  (`trainyard.rpc`, through `record_rpc`); health checks are not counted. For a streaming RPC the "handling time" is the life of the stream.
  Plus the standard `process_*` and `python_*` metrics.
* scheduler (`SchedulerCollector`): jobs by state and flavor, queue length and
  oldest queued job per flavor, registered trainers and their slots per flavor.
* trainer (`TrainerCollector`): slots and slots in use, training throughput
  (images/s of the running jobs), jobs finished since the process started.

The scheduler's and trainer's figures are read from their state when Prometheus
scrapes (custom collectors), so nothing has to be kept in step by hand and a
restarted process reports the truth at once. docs/operations.md lists every
metric with its labels.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # the collectors only read these; importing them here would pull in torch
    from trainyard.services.scheduler.service import SchedulerService
    from trainyard.services.trainer.runtime import TrainerRuntime

log = structlog.get_logger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Latency buckets from 1 ms (a metadata read) to 10 min (a long upload or a stream).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)

RPC_HANDLED = PromCounter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by method and status code.",
    ("grpc_service", "grpc_method", "grpc_code"),
    registry=REGISTRY,
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status, by method and code (streams: the stream's life).",
    ("grpc_service", "grpc_method", "grpc_code"),
    buckets=_BUCKETS,
    registry=REGISTRY,
)
COLLECT_ERRORS = PromCounter(
    "trainyard_metrics_collect_errors_total",
    "Scrapes in which a service's own figures could not be read (the rest of the scrape is served).",
    ("collector",),
    registry=REGISTRY,
)


def record_rpc(method: str, code: str, seconds: float) -> None:
    """Count one finished RPC. `method` is gRPC's full name, `/package.Service/Method`."""
    service, _, name = method.lstrip("/").rpartition("/")
    RPC_HANDLED.labels(service, name, code).inc()
    RPC_SECONDS.labels(service, name, code).observe(seconds)


# --- the HTTP endpoint --------------------------------------------------------

_registered: dict[type, Collector] = {}
_registered_lock = threading.Lock()


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `:port` (all interfaces) or `[v6]:port` → (host, port)."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"metrics listen address {listen!r}: expected HOST:PORT, :PORT or [V6]:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


@dataclass
class MetricsEndpoint:
    """A running /metrics HTTP server."""

    host: str
    port: int
    _server: Any

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(listen: str, *collectors: Collector) -> MetricsEndpoint | None:
    """Register `collectors` and serve `/metrics` on `listen` from a daemon thread.

    An empty `listen` (or "0" / "off") turns metrics off: nothing is started and
    None is returned. Port 0 picks a free port (the endpoint's `port`). A collector
    replaces an earlier one of the same class (a process has one scheduler or trainer).
    """
    if listen.strip().lower() in ("", "0", "off", "false"):
        return None
    with _registered_lock:
        for collector in collectors:
            previous = _registered.pop(type(collector), None)
            if previous is not None:
                REGISTRY.unregister(previous)
            REGISTRY.register(collector)
            _registered[type(collector)] = collector
    host, port = parse_listen(listen)
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    endpoint = MetricsEndpoint(host, server.server_port, server)
    log.info("metrics.listening", address=f"{host}:{endpoint.port}", path="/metrics")
    return endpoint


# --- collectors ---------------------------------------------------------------


class _SafeCollector:
    """A collector whose failure costs its own figures, never the whole scrape."""

    name = "collector"

    def collect(self) -> Iterator[Metric]:
        try:
            metrics = list(self._collect())
        except Exception:  # a locked or missing database must not break the RPC metrics
            log.warning("metrics.collect_failed", collector=self.name, exc_info=True)
            COLLECT_ERRORS.labels(self.name).inc()
            return iter(())
        return iter(metrics)

    def _collect(self) -> Iterable[Metric]:
        raise NotImplementedError


JOB_STATES = ("QUEUED", "STARTING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")


class SchedulerCollector(_SafeCollector):
    """Jobs, queues and trainer capacity, read from the scheduler's store at scrape time."""

    name = "scheduler"

    def __init__(self, service: SchedulerService, clock=time.time) -> None:
        self.service = service
        self.clock = clock

    def _collect(self) -> Iterable[Metric]:
        store = self.service.store
        flavors = list(self.service.catalog.flavors)
        # One grouped count rather than loading every job row: final jobs only accumulate.
        jobs = GaugeMetricFamily("trainyard_scheduler_jobs", "Training jobs by state and flavor.",
                                 labels=("state", "flavor"))
        counts = {(state, flavor): 0 for state in JOB_STATES for flavor in flavors}  # 0 until the first
        for state, flavor, n in store.count_jobs():
            counts[(state, flavor)] = n
        for (state, flavor), n in sorted(counts.items()):
            jobs.add_metric((state.lower(), flavor), n)
        queued = {flavor: counts.get(("QUEUED", flavor), 0) for flavor in flavors}
        yield jobs

        ended = CounterMetricFamily("trainyard_scheduler_jobs_ended",
                                    "Training jobs ended, by flavor, final state and stop reason (from the job records: "
                                    "it survives restarts).", labels=("flavor", "state", "stop_reason"))
        for flavor, state, reason, n in sorted(store.count_ended_jobs()):
            ended.add_metric((flavor, state.lower(), reason.lower()), n)
        yield ended

        length = GaugeMetricFamily("trainyard_scheduler_queue_length", "Jobs waiting in a flavor's queue.",
                                   labels=("flavor",))
        for flavor, n in sorted(queued.items()):
            length.add_metric((flavor,), n)
        yield length

        now = self.clock()
        oldest: dict[str, float] = {f: 0.0 for f in flavors}
        seen: set[str] = set()
        for job in store.jobs_in_states(("QUEUED",)):  # ordered by creation: the first is the oldest
            if job.flavor_id not in seen:
                seen.add(job.flavor_id)
                oldest[job.flavor_id] = max(0.0, now - job.create_time)
        wait = GaugeMetricFamily("trainyard_scheduler_oldest_queued_seconds",
                                 "Age of the oldest job waiting in a flavor's queue; 0 when none waits.",
                                 labels=("flavor",))
        for flavor, seconds in sorted(oldest.items()):
            wait.add_metric((flavor,), seconds)
        yield wait

        trainers = store.trainers()
        slots: Counter[str] = Counter({f: 0 for f in flavors})
        for trainer in trainers:
            for flavor in trainer.flavors:
                slots[flavor] += trainer.slots
        yield GaugeMetricFamily("trainyard_scheduler_trainers", "Trainers registered with the scheduler.",
                                value=len(trainers))
        capacity = GaugeMetricFamily("trainyard_scheduler_trainer_slots",
                                     "Training slots of the registered trainers that serve a flavor.",
                                     labels=("flavor",))
        for flavor, n in sorted(slots.items()):
            capacity.add_metric((flavor,), n)
        yield capacity


class TrainerCollector(_SafeCollector):
    """Slots, throughput and finished jobs, read from the trainer's runtime at scrape time."""

    name = "trainer"

    def __init__(self, runtime: TrainerRuntime) -> None:
        self.runtime = runtime

    def _collect(self) -> Iterable[Metric]:
        runtime = self.runtime
        jobs = runtime.jobs()
        running = [job for job in jobs if not job.done]
        yield GaugeMetricFamily("trainyard_trainer_slots", "Jobs this trainer can run at once.",
                                value=runtime.slots)
        yield GaugeMetricFamily("trainyard_trainer_slots_in_use", "Jobs this trainer is running.",
                                value=len(running))
        throughput = 0.0
        for job in running:
            progress = _latest(job, "progress")
            if progress is not None:
                throughput += float(progress.get("imagesPerSecond", 0.0))
        yield GaugeMetricFamily(
            "trainyard_trainer_images_per_second",
            "Training throughput: images/s of the latest progress report of each running job, summed.",
            value=throughput,
        )
        finished = {reason.removeprefix("STOP_REASON_").lower(): n for reason, n in runtime.finished_jobs().items()}
        done = CounterMetricFamily("trainyard_trainer_jobs_finished",
                                   "Jobs finished on this trainer since it started, by stop reason.",
                                   labels=("stop_reason",))
        for reason, n in sorted(finished.items()):
            done.add_metric((reason,), n)
        yield done


def _latest(job: Any, kind: str) -> dict[str, Any] | None:
    with job.changed:
        for event in reversed(job.events):
            if event.kind == kind:
                return event.body
    return None
