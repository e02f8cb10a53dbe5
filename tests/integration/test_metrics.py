"""Prometheus metrics: the three service processes with their /metrics endpoints on.

The whole local stack runs (real S3, real processes started as in production,
each with its `TRAINYARD_<SERVICE>_METRICS_LISTEN`), the test drives it through
the SDK, scrapes each endpoint over HTTP and checks that the counters and gauges
moved as they should: RPCs by method and code (errors included), jobs by state,
the queue of a flavor no trainer serves, trainer capacity and finished jobs.
The trainer's throughput gauge is checked on a runtime with a job in progress
(a real training run on a few images ends before a scrape could catch it).
"""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from trainyard import metrics
from trainyard.errors import FailedPrecondition, NotFound
from trainyard.sample_data import digit_files
from trainyard.scheduler.v1 import scheduler_pb2
from trainyard.sdk import Client
from trainyard.services.trainer.runtime import JobRun, JobSpec, TrainerRuntime
from trainyard.stack.local import SERVICES, LocalStack, StackSettings, free_port

DATASET = "trainyard.dataset.v1.DatasetService"
SCHEDULER = "trainyard.scheduler.v1.SchedulerService"
TRAINER = "trainyard.trainer.v1.TrainerService"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    metrics_ports = {name: free_port() for name in SERVICES}
    settings = StackSettings(
        data_dir=tmp_path_factory.mktemp("metrics-stack"),
        heartbeat_seconds=1.0,
        extra_env={
            **{f"TRAINYARD_{name.upper()}_METRICS_LISTEN": f"127.0.0.1:{port}" for name, port in metrics_ports.items()},
            # No trainer serves compute-gpu-1: a job there waits in its queue.
            "TRAINYARD_TRAINER_FLAVORS": "free-gpu",
        },
    )
    stack = LocalStack(settings)
    stack.start()
    stack.metrics_ports = metrics_ports
    yield stack
    stack.stop()


def test_metrics_follow_rpcs_jobs_and_trainers(stack):
    ports = stack.metrics_ports
    client = Client(stack.address("dataset"), stack.address("scheduler"))

    dataset = client.create_dataset("metrics")
    client.upload_images(dataset.id, [f for f in digit_files(per_class=6) if f[1] in ("0", "1")])
    with pytest.raises(NotFound):
        client.get_dataset("no-such-dataset")
    with pytest.raises(FailedPrecondition):
        client.create_training_job(dataset.id)  # the free flavor without accepting its terms
    waiting = client.create_training_job(dataset.id, flavor="compute-gpu-1", max_epochs=1)
    job = client.create_training_job(dataset.id, accept_free_terms=True, max_epochs=1, preference="performance_first")
    done = client.wait(job.id)
    assert done.state == scheduler_pb2.TRAINING_JOB_STATE_COMPLETED, done.error_message

    # dataset service: RPCs by method and code, latency histogram, process metrics
    text = scrape(ports["dataset"])
    assert value(text, "grpc_server_handled_total", grpc_service=DATASET, grpc_method="CreateDataset", grpc_code="OK") == 1
    assert value(text, "grpc_server_handled_total", grpc_service=DATASET, grpc_method="UploadImages", grpc_code="OK") == 1
    assert value(text, "grpc_server_handled_total", grpc_service=DATASET, grpc_method="GetDataset", grpc_code="NOT_FOUND") == 1
    assert value(text, "grpc_server_handling_seconds_count", grpc_service=DATASET, grpc_method="CreateDataset") == 1
    assert value(text, "grpc_server_handling_seconds_sum", grpc_service=DATASET, grpc_method="UploadImages") > 0
    assert value(text, "process_resident_memory_bytes") > 0
    assert "grpc.health" not in text  # probes are not counted

    # scheduler: RPCs, jobs by state and flavor, queues, trainer capacity
    text = scrape(ports["scheduler"])
    assert value(text, "grpc_server_handled_total", grpc_service=SCHEDULER, grpc_method="CreateTrainingJob", grpc_code="OK") == 2
    assert value(text, "grpc_server_handled_total", grpc_service=SCHEDULER, grpc_method="CreateTrainingJob",
                 grpc_code="FAILED_PRECONDITION") == 1
    assert value(text, "grpc_server_handled_total", grpc_service=SCHEDULER, grpc_method="RegisterTrainer", grpc_code="OK") >= 1
    assert value(text, "trainyard_scheduler_jobs", state="completed", flavor="free-gpu") == 1
    assert value(text, "trainyard_scheduler_jobs", state="queued", flavor="compute-gpu-1") == 1
    assert value(text, "trainyard_scheduler_queue_length", flavor="compute-gpu-1") == 1
    assert value(text, "trainyard_scheduler_queue_length", flavor="free-gpu") == 0
    assert value(text, "trainyard_scheduler_oldest_queued_seconds", flavor="compute-gpu-1") > 0
    assert value(text, "trainyard_scheduler_trainers") == 1
    assert value(text, "trainyard_scheduler_trainer_slots", flavor="free-gpu") == 1
    assert value(text, "trainyard_scheduler_trainer_slots", flavor="compute-gpu-1") == 0

    client.cancel_job(waiting.id)
    text = scrape(ports["scheduler"])
    assert value(text, "trainyard_scheduler_queue_length", flavor="compute-gpu-1") == 0
    assert value(text, "trainyard_scheduler_jobs", state="cancelled", flavor="compute-gpu-1") == 1

    # trainer: capacity, slots in use, finished jobs, the RunTraining stream counted when it ended
    deadline = time.monotonic() + 10
    while True:  # the stream's access-log line comes after the scheduler has seen the outcome
        text = scrape(ports["trainer"])
        if value(text, "grpc_server_handled_total", grpc_service=TRAINER, grpc_method="RunTraining") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert value(text, "grpc_server_handled_total", grpc_service=TRAINER, grpc_method="RunTraining", grpc_code="OK") >= 1
    assert value(text, "trainyard_trainer_slots") == 1
    assert value(text, "trainyard_trainer_slots_in_use") == 0
    assert value(text, "trainyard_trainer_jobs_finished_total") == 1
    assert value(text, "trainyard_trainer_images_per_second") == 0


def test_trainer_collector_reports_running_jobs():
    runtime = TrainerRuntime(objects=None, slots=2)  # type: ignore[arg-type] - the collector never touches S3
    spec = JobSpec(job_id="job-1", dataset_id="d", dataset_version="v1", manifest_key="m", preference="balance",
                   seed=0, deadline=time.time() + 60, deadline_reason="DURATION_LIMIT", init_artifact_prefix="",
                   artifact_prefix="a/", max_epochs=1)
    running = JobRun(spec)
    running.emit("progress", {"epoch": 1, "imagesPerSecond": 120.0})
    running.emit("progress", {"epoch": 2, "imagesPerSecond": 150.5})
    finished = JobRun(spec)
    finished.emit("outcome", {"stopReason": "STOP_REASON_CONVERGED"})
    runtime._jobs.update({"job-1": running, "job-0": finished})

    registry = CollectorRegistry()
    registry.register(metrics.TrainerCollector(runtime))
    assert registry.get_sample_value("trainyard_trainer_slots") == 2
    assert registry.get_sample_value("trainyard_trainer_slots_in_use") == 1
    assert registry.get_sample_value("trainyard_trainer_images_per_second") == 150.5  # the latest report
    assert registry.get_sample_value("trainyard_trainer_jobs_finished_total", {"stop_reason": "converged"}) == 1


def test_a_failing_collector_costs_its_own_figures_only():
    class Broken(metrics.SchedulerCollector):
        def _collect(self):
            raise RuntimeError("database is locked")

    before = metrics.REGISTRY.get_sample_value("trainyard_metrics_collect_errors_total", {"collector": "scheduler"}) or 0
    assert list(Broken(service=None).collect()) == []  # type: ignore[arg-type]
    assert metrics.REGISTRY.get_sample_value("trainyard_metrics_collect_errors_total", {"collector": "scheduler"}) == before + 1


def test_metrics_listen_addresses():
    assert metrics.parse_listen("0.0.0.0:9090") == ("0.0.0.0", 9090)
    assert metrics.parse_listen(":9090") == ("0.0.0.0", 9090)
    assert metrics.parse_listen("[::]:9090") == ("::", 9090)
    assert metrics.serve("") is None  # off: nothing started
    with pytest.raises(SystemExit):
        metrics.parse_listen("9090")
