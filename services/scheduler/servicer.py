"""SchedulerService RPCs: proto in → domain call → proto out."""

from __future__ import annotations

import threading
from collections import OrderedDict

from trainyard import auth
from trainyard.artifacts import MAX_PREDICT_IMAGES
from trainyard.common.v1 import training_pb2 as common
from trainyard.enums import enum_name
from trainyard.errors import InvalidArgument
from trainyard.scheduler.v1 import scheduler_pb2
from trainyard.scheduler.v1 import scheduler_service_pb2 as api
from trainyard.scheduler.v1 import scheduler_service_pb2_grpc as api_grpc
from trainyard.services.scheduler import mapping
from trainyard.services.scheduler.service import JobRequest, SchedulerService
from trainyard.timeconv import request_times
from trainyard.trainer.v1 import trainer_pb2


class SchedulerServicer(api_grpc.SchedulerServiceServicer):
    def __init__(self, service: SchedulerService) -> None:
        self.service = service
        self._responses = _ResponseCache()

    def CreateTrainingJob(self, request, context):
        preference = ""
        if request.preference:
            preference = enum_name(common.TrainingPreference, request.preference, "TRAINING_PREFERENCE_", "preference")
        # Left out (None) means the default ratio; an explicit "" is passed on, to be refused (S3).
        train_ratio = request.train_ratio if request.HasField("train_ratio") else None
        job = self.service.create_job(auth.tenant(), JobRequest(
            request_id=request.request_id, dataset_id=request.dataset_id, dataset_version=request.dataset_version,
            new_version_name=request.new_version_name, train_ratio=train_ratio, seed=request.seed,
            incremental_model_version=request.incremental_model_version,
            max_duration_minutes=request.max_duration_minutes, preference=preference, flavor_id=request.flavor_id,
            accept_free_terms=request.accept_free_terms, max_epochs=request.max_epochs,
        ))
        return api.CreateTrainingJobResponse(training_job=mapping.job(job))

    def GetTrainingJob(self, request, context):
        return api.GetTrainingJobResponse(training_job=mapping.job(self.service.get_job(auth.tenant(), request.job_id)))

    def ListTrainingJobs(self, request, context):
        jobs, token = self.service.list_jobs(auth.tenant(), request.dataset_id, request.page_size, request.page_token)
        return api.ListTrainingJobsResponse(training_jobs=[mapping.job(j) for j in jobs], next_page_token=token)

    def CancelTrainingJob(self, request, context):
        return api.CancelTrainingJobResponse(training_job=mapping.job(self.service.cancel(auth.tenant(), request.job_id)))

    async def WatchTrainingJob(self, request, context):
        # A coroutine: the scheduler's asyncio server serves every watcher from one event loop.
        async for event in self.service.watch_async(auth.tenant(), request.job_id, request.after_sequence,
                                                    ready=lambda: context.send_initial_metadata(())):
            yield self._responses.get(event)


    def ListFlavors(self, request, context):
        return api.ListFlavorsResponse(flavors=[mapping.flavor(*f) for f in self.service.flavors()])

    def ListModelVersions(self, request, context):
        tenant = auth.tenant()
        versions, token = self.service.model_versions(tenant, request.dataset_id, request.page_size, request.page_token)
        return api.ListModelVersionsResponse(model_versions=[mapping.model_version(v) for v in versions], next_page_token=token,
                                             best_version=self.service.best_model_version(tenant, request.dataset_id))

    def GetModelVersion(self, request, context):
        body = self.service.model_version(auth.tenant(), request.dataset_id, request.version)
        return api.GetModelVersionResponse(model_version=mapping.model_version(body))

    def Predict(self, request, context):
        if not request.images:
            raise InvalidArgument.field("images", "at least one image is required")
        if len(request.images) > MAX_PREDICT_IMAGES:
            raise InvalidArgument.field("images", f"{len(request.images)} images; at most {MAX_PREDICT_IMAGES} per request")
        predictions = self.service.predict(auth.tenant(), request.dataset_id, request.version, list(request.images), request.top_k)
        return api.PredictResponse(predictions=[
            trainer_pb2.Prediction(labels=[trainer_pb2.LabelScore(label=label, score=score) for label, score in p])
            for p in predictions
        ])

    def DownloadModelArtifact(self, request, context):
        for chunk in self.service.artifact(auth.tenant(), request.dataset_id, request.version, request.name):
            yield api.DownloadModelArtifactResponse(chunk=chunk)

    def GetUsage(self, request, context):
        caller = auth.current()
        start, end = request_times(request, "start_time", "end_time")
        # an admin key sees every tenant
        lines = self.service.usage(None if caller.admin or caller.internal else auth.tenant(), start, end)
        return api.GetUsageResponse(lines=[
            scheduler_pb2.UsageLine(tenant=t, flavor_id=f, job_count=n, billed_seconds=s, cost=c) for t, f, n, s, c in lines
        ])

    def RegisterTrainer(self, request, context):
        timeout = self.service.register_trainer(
            request.trainer_id, request.address, list(request.flavor_ids), request.slots, request.device
        )
        return api.RegisterTrainerResponse(heartbeat_timeout_seconds=int(timeout))


class _ResponseCache:
    """Events are immutable: map each to its response once, however many watchers send it."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int], api.WatchTrainingJobResponse] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, event) -> api.WatchTrainingJobResponse:
        key = (event.job_id, event.sequence)
        with self._lock:
            response = self._items.get(key)
        if response is None:
            response = api.WatchTrainingJobResponse(event=mapping.event(event))
            with self._lock:
                self._items[key] = response
                if len(self._items) > self._size:
                    self._items.popitem(last=False)
        return response
