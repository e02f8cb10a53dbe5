"""Scheduler: domain objects ↔ protos.

Events, progress and model versions are stored in their proto-JSON form, so
mapping them is a parse.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from trainyard.common.v1 import training_pb2 as common
from trainyard.scheduler.v1 import scheduler_pb2 as pb
from trainyard.services.scheduler.flavors import Flavor
from trainyard.services.scheduler.service import _parameters
from trainyard.services.scheduler.store import Event, Job
from trainyard.timeconv import duration, timestamp

_FLAVOR_KIND = {"free": pb.FLAVOR_KIND_FREE, "pay_per_use": pb.FLAVOR_KIND_PAY_PER_USE}


def job(j: Job) -> pb.TrainingJob:
    message = pb.TrainingJob(
        id=j.id, dataset_id=j.dataset_id, parameters=json_format.ParseDict(_parameters(j.params), pb.TrainingParameters()),
        state=pb.TrainingJobState.Value("TRAINING_JOB_STATE_" + j.state),
        stop_reason=common.StopReason.Value("STOP_REASON_" + j.stop_reason) if j.stop_reason else 0,
        error_message=j.error_message, queue_position=j.queue_position, wait_reason=j.wait_reason,
        create_time=timestamp(j.create_time), start_time=timestamp(j.start_time), end_time=timestamp(j.end_time),
        duration_limit=duration(j.duration_limit), model_version=j.model_version, last_sequence=j.last_sequence,
        billed_seconds=j.billed_seconds, cost=j.cost,
    )
    if j.latest_progress:
        json_format.ParseDict(j.latest_progress, message.latest_progress, ignore_unknown_fields=True)
    return message


def event(e: Event) -> pb.TrainingJobEvent:
    message = pb.TrainingJobEvent(job_id=e.job_id, sequence=e.sequence, time=timestamp(e.time), final=e.final)
    json_format.ParseDict(e.payload, message, ignore_unknown_fields=True)
    return message


def flavor(f: Flavor, capacity: int, in_use: int, queued: int) -> pb.Flavor:
    return pb.Flavor(
        id=f.id, display_name=f.display_name, kind=_FLAVOR_KIND[f.kind], gpus_per_job=f.gpus_per_job,
        price_per_hour=f.price_per_hour, tenant_concurrency_quota=f.tenant_concurrency_quota, capacity=capacity,
        slots_in_use=in_use, queue_length=queued, terms=f.terms,
        max_job_duration=duration(f.max_job_minutes * 60) if f.max_job_minutes else None,
    )


def model_version(body: dict[str, Any]) -> pb.ModelVersion:
    """A stored model version (kept in its proto-JSON form) as a proto."""
    return json_format.ParseDict(body, pb.ModelVersion(), ignore_unknown_fields=True)
