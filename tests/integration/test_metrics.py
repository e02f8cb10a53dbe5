"""Prometheus metrics: real servers built by their factories, /metrics scraped over HTTP.

The three services run in this process (port 0, real S3), configured from an
environment as their `main` is, with the metrics endpoint on port 0 as `main`
starts it (`metrics.serve` with the scheduler's and trainer's collectors). The
test calls the services through their generated stubs and checks that the
counters and gauges move: RPCs by method and status code (errors included),
latency histograms, jobs by state, a flavor's queue, trainer capacity, slots in
use and training throughput.

One process, one registry: RPC counters are shared with any other in-process
server of the test session, so they are compared before and after.
"""

from __future__ import annotations

import io
import time
import urllib.request

import grpc
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from trainyard import metrics
from trainyard.dataset.v1 import dataset_service_pb2 as ds
from trainyard.dataset.v1 import dataset_service_pb2_grpc as ds_grpc
from trainyard.scheduler.v1 import scheduler_service_pb2 as sc
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as sc_grpc
from trainyard.services.dataset import server as dataset_server
from trainyard.services.scheduler import server as scheduler_server
from trainyard.services.trainer import server as trainer_server
from trainyard.services.trainer.runtime import JobRun, JobSpec
from trainyard.trainer.v1 import trainer_service_pb2 as tr
from trainyard.trainer.v1 import trainer_service_pb2_grpc as tr_grpc

DATASET = "trainyard.dataset.v1.DatasetService"
SCHEDULER = "trainyard.scheduler.v1.SchedulerService"
TRAINER = "trainyard.trainer.v1.TrainerService"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_config, security):
    """dataset, scheduler and trainer servers plus this process's /metrics endpoint."""
    env = {**s3_config.to_env(), **security.env, "TRAINYARD_DATA_DIR": str(tmp_path_factory.mktemp("metrics"))}
    dataset_config = dataset_server.DatasetConfig.from_env(
        {**env, "TRAINYARD_DATASET_LISTEN": "127.0.0.1:0", "TRAINYARD_DATASET_METRICS_LISTEN": "127.0.0.1:0"})
    dataset, _ = dataset_server.build(dataset_config)
    scheduler_config = scheduler_server.SchedulerConfig.from_env({
        **env, "TRAINYARD_SCHEDULER_LISTEN": "127.0.0.1:0", "TRAINYARD_SCHEDULER_METRICS_LISTEN": "127.0.0.1:0",
        "TRAINYARD_DATASET_ADDRESS": f"127.0.0.1:{dataset.port}",
    })
    scheduler, service = scheduler_server.build(scheduler_config)
    trainer_config = trainer_server.TrainerConfig.from_env({
        **env, "TRAINYARD_TRAINER_LISTEN": "127.0.0.1:0", "TRAINYARD_TRAINER_METRICS_LISTEN": "127.0.0.1:0",
        "TRAINYARD_TRAINER_SLOTS": "2",
    })
    trainer, runtime = trainer_server.build(trainer_config)
    assert dataset_config.metrics_listen == scheduler_config.metrics_listen == trainer_config.metrics_listen == "127.0.0.1:0"
    # What each main() does; here the three share the process, so one endpoint serves them all.
    endpoint = metrics.serve(scheduler_config.metrics_listen,
                             metrics.SchedulerCollector(service), metrics.TrainerCollector(runtime))
    assert endpoint is not None and endpoint.port > 0
    yield {"dataset": dataset, "scheduler": scheduler, "trainer": trainer, "runtime": runtime, "endpoint": endpoint}
    endpoint.stop()
    for running in (trainer, scheduler, dataset):
        running.stop(0)
    service.stop()


def scrape(endpoint: metrics.MetricsEndpoint) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=10) as response:
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


def handled(text: str, service: str, method: str, code: str) -> float:
    return value(text, "grpc_server_handled_total", grpc_service=service, grpc_method=method, grpc_code=code)


def png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 255 - shade, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_metrics_follow_rpcs_jobs_and_trainers(stack, security):
    datasets = ds_grpc.DatasetServiceStub(security.channel(f"127.0.0.1:{stack['dataset'].port}"))
    scheduler = sc_grpc.SchedulerServiceStub(security.channel(f"127.0.0.1:{stack['scheduler'].port}"))
    trainer = tr_grpc.TrainerServiceStub(security.channel(f"127.0.0.1:{stack['trainer'].port}", internal_for="alpha"))
    before = scrape(stack["endpoint"])

    # dataset service: a dataset of two classes of six images, and an unknown one
    dataset = datasets.CreateDataset(ds.CreateDatasetRequest(display_name="metrics")).dataset

    def upload():
        yield ds.UploadImagesRequest(dataset_id=dataset.id)
        for i in range(12):
            yield ds.UploadImagesRequest(header=ds.ImageHeader(file_name=f"{i}.png", label="ab"[i % 2]))
            yield ds.UploadImagesRequest(chunk=png(10 * i))

    assert datasets.UploadImages(upload()).stored_count == 12
    with pytest.raises(grpc.RpcError) as missing:
        datasets.GetDataset(ds.GetDatasetRequest(dataset_id="no-such-dataset"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    # scheduler: a refused job, and a job on a flavor that no trainer serves (it stays queued)
    with pytest.raises(grpc.RpcError) as refused:
        scheduler.CreateTrainingJob(sc.CreateTrainingJobRequest(dataset_id=dataset.id, flavor_id="free-gpu"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # the free flavor's terms not accepted
    waiting = scheduler.CreateTrainingJob(
        sc.CreateTrainingJobRequest(dataset_id=dataset.id, flavor_id="compute-gpu-1", max_epochs=1)).training_job
    as_a_trainer = sc_grpc.SchedulerServiceStub(security.channel(f"127.0.0.1:{stack['scheduler'].port}", internal_for=""))
    as_a_trainer.RegisterTrainer(sc.RegisterTrainerRequest(
        trainer_id="metrics-trainer", address=f"127.0.0.1:{stack['trainer'].port}", flavor_ids=["free-gpu"], slots=2,
        device="cpu"))

    # trainer: two refused calls, and a job in progress (as a training thread leaves it)
    with pytest.raises(grpc.RpcError) as bad:
        trainer.Predict(tr.PredictRequest())
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as unknown:
        trainer.StopTraining(tr.StopTrainingRequest(job_id="no-such-job"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    spec = JobSpec(job_id="job-metrics", dataset_id=dataset.id, dataset_version="v1", manifest_key="m",
                   preference="balance", seed=0, deadline=time.time() + 60, deadline_reason="DURATION_LIMIT",
                   init_artifact_prefix="", artifact_prefix="a/", max_epochs=1)
    counted = stack["runtime"].count_finished  # what the runtime gives the jobs it starts
    running, finished = JobRun(spec, on_outcome=counted), JobRun(spec, on_outcome=counted)
    running.emit("progress", {"epoch": 1, "imagesPerSecond": 120.0})
    running.emit("progress", {"epoch": 2, "imagesPerSecond": 150.5})
    finished.emit("outcome", {"stopReason": "STOP_REASON_CONVERGED"})
    stack["runtime"]._jobs.update({"job-metrics": running, "job-metrics-0": finished})

    after = scrape(stack["endpoint"])

    def moved(service: str, method: str, code: str) -> float:
        return handled(after, service, method, code) - handled(before, service, method, code)

    # RPCs by method and code, errors included; latency histograms; process metrics
    assert moved(DATASET, "CreateDataset", "OK") == 1
    assert moved(DATASET, "UploadImages", "OK") == 1
    assert moved(DATASET, "GetDataset", "NOT_FOUND") == 1
    assert moved(SCHEDULER, "CreateTrainingJob", "FAILED_PRECONDITION") == 1
    assert moved(SCHEDULER, "CreateTrainingJob", "OK") == 1
    assert moved(SCHEDULER, "RegisterTrainer", "OK") == 1
    assert moved(TRAINER, "Predict", "INVALID_ARGUMENT") == 1
    assert moved(TRAINER, "StopTraining", "NOT_FOUND") == 1
    assert moved(DATASET, "PublishVersion", "OK") == 1  # the scheduler's call, for the queued job
    count = "grpc_server_handling_seconds_count"
    assert (value(after, count, grpc_service=DATASET, grpc_method="UploadImages", grpc_code="OK")
            - value(before, count, grpc_service=DATASET, grpc_method="UploadImages", grpc_code="OK")) == 1
    assert value(after, "grpc_server_handling_seconds_sum", grpc_service=DATASET, grpc_method="UploadImages") > 0
    assert value(after, "process_resident_memory_bytes") > 0
    assert "grpc.health" not in after  # health checks (the probes) are not counted

    # scheduler: jobs by state and flavor, queues, registered capacity
    assert value(after, "trainyard_scheduler_jobs", state="queued", flavor="compute-gpu-1") == 1
    assert value(after, "trainyard_scheduler_queue_length", flavor="compute-gpu-1") == 1
    assert value(after, "trainyard_scheduler_queue_length", flavor="free-gpu") == 0
    assert value(after, "trainyard_scheduler_oldest_queued_seconds", flavor="compute-gpu-1") > 0
    assert value(after, "trainyard_scheduler_trainers") == 1
    assert value(after, "trainyard_scheduler_trainer_slots", flavor="free-gpu") == 2
    assert value(after, "trainyard_scheduler_trainer_slots", flavor="compute-gpu-1") == 0

    # trainer: capacity, slots in use, throughput of the running job, finished jobs
    assert value(after, "trainyard_trainer_slots") == 2
    assert value(after, "trainyard_trainer_slots_in_use") == 1
    assert value(after, "trainyard_trainer_images_per_second") == 150.5  # the latest report
    assert value(after, "trainyard_trainer_jobs_finished_total", stop_reason="converged") == 1

    # the gauges follow the state at each scrape
    scheduler.CancelTrainingJob(sc.CancelTrainingJobRequest(job_id=waiting.id))
    running.emit("outcome", {"stopReason": "STOP_REASON_CANCELLED"})
    later = scrape(stack["endpoint"])
    assert value(later, "trainyard_scheduler_queue_length", flavor="compute-gpu-1") == 0
    assert value(later, "trainyard_scheduler_jobs", state="cancelled", flavor="compute-gpu-1") == 1
    assert 'trainyard_scheduler_jobs{flavor="free-gpu",state="failed"} 0.0' in later.replace(  # present before any
        'state="failed",flavor="free-gpu"', 'flavor="free-gpu",state="failed"')
    assert value(later, "trainyard_scheduler_jobs_ended_total", flavor="compute-gpu-1", state="cancelled",
                 stop_reason="cancelled") == 1
    assert value(later, "trainyard_trainer_slots_in_use") == 0
    assert value(later, "trainyard_trainer_images_per_second") == 0
    assert value(later, "trainyard_trainer_jobs_finished_total") == 2
    with stack["runtime"]._lock:  # ended jobs the runtime no longer keeps still count
        stack["runtime"]._jobs.clear()
    assert value(scrape(stack["endpoint"]), "trainyard_trainer_jobs_finished_total") == 2


def test_a_failing_collector_costs_its_own_figures_only():
    class Broken(metrics.SchedulerCollector):
        def _collect(self):
            raise RuntimeError("database is locked")

    errors = "trainyard_metrics_collect_errors_total"
    before = metrics.REGISTRY.get_sample_value(errors, {"collector": "scheduler"}) or 0
    assert list(Broken(service=None).collect()) == []  # type: ignore[arg-type]
    assert metrics.REGISTRY.get_sample_value(errors, {"collector": "scheduler"}) == before + 1


def test_metrics_listen_addresses():
    assert metrics.parse_listen("0.0.0.0:9090") == ("0.0.0.0", 9090)
    assert metrics.parse_listen(":9090") == ("0.0.0.0", 9090)
    assert metrics.parse_listen("[::]:9090") == ("::", 9090)
    assert metrics.serve("") is None  # off: nothing started
    with pytest.raises(SystemExit):
        metrics.parse_listen("9090")
