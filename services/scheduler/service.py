"""The scheduler's domain: job creation, the queues, dispatch, deadlines, events, model versions.

Threads: one dispatcher loop (queues, deadlines, lost trainers) and one runner
per active job that follows the trainer's event stream. Every state change
commits with its event in one transaction, then wakes watchers.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import threading
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import structlog

from trainyard import paging, timeconv
from trainyard.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    TrainyardError,
    Unavailable,
    shown,
)
from trainyard.services.dataset.rules import parse_train_ratio, validate_version_name
from trainyard.services.scheduler.events import EventFeed
from trainyard.services.scheduler.flavors import Flavor, FlavorCatalog
from trainyard.services.scheduler.ports import DatasetPort, TrainerPort, TrainerUpdate, TrainingSpec
from trainyard.services.scheduler.store import (
    ACTIVE_STATES,
    Event,
    Job,
    SchedulerStore,
    Trainer,
)

log = structlog.get_logger(__name__)

DEFAULT_MAX_DURATION_MINUTES = 60
MIN_DURATION_MINUTES, MAX_DURATION_MINUTES = 6, 6000
PREFERENCES = ("PERFORMANCE_FIRST", "BALANCE", "ACCURACY_FIRST")
# The architecture each preference's preset trains (services/trainer/presets.py; a test keeps them equal)
PRESET_OF_ARCHITECTURE = {"mobilenet_v3_small": "PERFORMANCE_FIRST", "resnet18": "BALANCE", "resnet50": "ACCURACY_FIRST"}
DATASET_CHECK_TIMEOUT = 3.0  # seconds for the dataset service to say whether one queued job's dataset exists
DATASET_CHECKS_SECONDS = 10.0  # at most this long asking, per pass; the datasets not reached are checked next time
BEGINNING_OF_TIME = float(timeconv.MIN_TIMESTAMP_SECONDS)  # GetUsage's start when left out: 0001-01-01


@dataclass(frozen=True)
class SchedulerSettings:
    minute_seconds: float = 60.0  # the length of a "minute" for S5/S7 limits; tests shorten it
    stop_grace_seconds: float = 60.0  # after the deadline, how long a trainer may take to stop
    heartbeat_timeout_seconds: float = 30.0
    dispatch_interval_seconds: float = 0.5
    event_retention_seconds: float = 30 * 86400  # events of jobs ended longer ago are pruned (the final one stays)
    job_creations_per_minute: int = 60  # per tenant; 0 for no limit
    dataset_check_seconds: float = 30.0  # how often queued jobs' datasets are checked for deletion


@dataclass(frozen=True)
class JobRequest:
    dataset_id: str
    request_id: str = ""
    dataset_version: str = ""
    new_version_name: str = ""
    train_ratio: str | None = None  # None: left out (the default 0.8); "" is refused (rule S3)
    seed: int = 0
    incremental_model_version: str = ""
    max_duration_minutes: int = 0
    preference: str = ""
    flavor_id: str = ""
    accept_free_terms: bool = False
    max_epochs: int = 0


def request_fields(req: JobRequest) -> str:
    """The request's fields but its id, in one canonical text (sorted JSON): what a retry with the
    same request id must repeat. Fields as sent, so a default left out and the same value written
    out differ (a retry resends the same request)."""
    values = asdict(req)
    del values["request_id"]
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _differing_fields(stored: str, sent: str) -> list[str]:
    """The fields whose values differ; a field one side lacks (recorded by a release that did not
    have it) counts as its default, so retries keep matching across upgrades."""
    before, after = json.loads(stored), json.loads(sent)
    defaults = {f.name: f.default for f in fields(JobRequest)}
    return sorted(k for k in before.keys() | after.keys()
                  if before.get(k, defaults.get(k)) != after.get(k, defaults.get(k)))


class SchedulerService:
    def __init__(
        self,
        store: SchedulerStore,
        catalog: FlavorCatalog,
        datasets: DatasetPort,
        trainers: TrainerPort,
        settings: SchedulerSettings = SchedulerSettings(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.datasets = datasets
        self.trainers = trainers
        self.settings = settings
        self.clock = clock
        self.feed = EventFeed(store)
        store.on_events = self.feed.published
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._runners: dict[str, threading.Thread] = {}
        self._runners_lock = threading.Lock()
        # Creations with one request id are serialised; a fixed set of lock stripes keeps memory bounded.
        self._request_locks = [threading.Lock() for _ in range(64)]
        self._dispatcher: threading.Thread | None = None
        self._last_prune = 0.0
        self._last_dataset_check = 0.0
        # No trainer can heartbeat while this process is down, so a trainer's silence counts from
        # our start at the earliest: a scheduler restart never makes a live trainer (and its jobs) lost.
        self._listening_since = clock()

    # lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Re-attach to jobs that were active when the process stopped, then dispatch."""
        for job in self.store.jobs_in_states(ACTIVE_STATES):
            log.info("job.reattach", job_id=job.id, trainer_id=job.trainer_id, after=job.trainer_seq)
            self._start_runner(job.id, attach=True)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="dispatcher", daemon=True)
        self._dispatcher.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        self.feed.wake()

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # creation --------------------------------------------------------------------
    def create_job(self, tenant: str, req: JobRequest) -> Job:
        """Validate everything, then publish a version if needed, then queue the job.

        A request id makes creation idempotent (AIP-155): a retry of the same request returns the
        job already created, even over the rate limit. The id sent again with other fields is a
        mistake: those fields are checked (a bad one answers as it would with a new id), then
        ALREADY_EXISTS names the fields that differ. Jobs created before requests were recorded
        (schema 1) match any request with their id.
        """
        if not req.request_id:
            return self._create(req, tenant)
        sent = request_fields(req)
        with self._request_locks[zlib.crc32(req.request_id.encode()) % len(self._request_locks)]:
            existing = self.store.job_by_request(tenant, req.request_id)
            if existing is None:
                return self._create(req, tenant, sent)
            recorded = existing.request_fields
            if recorded is None or not _differing_fields(recorded, sent):
                return existing
        self._check_fields(req)
        raise AlreadyExists(
            f"request_id {shown(req.request_id)} was used for a different request (job {existing.id}); "
            f"these fields differ: {', '.join(_differing_fields(recorded, sent))}. Send the identical "
            "request to get that job, or a new request_id for a new job"
        )

    def _check_fields(self, req: JobRequest) -> tuple[int, str, Flavor]:
        """The checks of the request's own fields, needing no other service:
        (max duration in minutes, preference, flavor) with their defaults."""
        minutes = req.max_duration_minutes or DEFAULT_MAX_DURATION_MINUTES
        if not MIN_DURATION_MINUTES <= minutes <= MAX_DURATION_MINUTES:
            raise InvalidArgument.field(
                "max_duration_minutes",
                f"must be {MIN_DURATION_MINUTES} to {MAX_DURATION_MINUTES} minutes, got {req.max_duration_minutes}",
            )
        preference = req.preference or "BALANCE"
        if preference not in PREFERENCES:
            raise InvalidArgument.field("preference", f"must be one of {', '.join(PREFERENCES)}")
        if req.max_epochs < 0:
            raise InvalidArgument.field("max_epochs", "must not be negative")
        if req.train_ratio is not None:
            parse_train_ratio(req.train_ratio)
        if req.new_version_name:
            try:
                validate_version_name(req.new_version_name)
            except InvalidArgument as exc:  # the dataset service's rule, in this request's words
                raise exc.renamed("new_version_name") from None
        if req.dataset_version and (req.train_ratio is not None or req.new_version_name):
            field = "train_ratio" if req.train_ratio is not None else "new_version_name"
            raise InvalidArgument.field(field, "applies only when publishing a new version; leave dataset_version empty")
        flavor = self._flavor(req.flavor_id or self.catalog.default_flavor)
        if flavor.is_free and not req.accept_free_terms:
            raise FailedPrecondition(
                f"the {flavor.display_name} flavor requires accepting its terms (accept_free_terms): {flavor.terms}"
            )
        return minutes, preference, flavor

    def _create(self, req: JobRequest, tenant: str, recorded: str | None = None) -> Job:
        """Create the job; `recorded` is the request's fields (request_fields) when it has an id."""
        self._check_creation_rate(tenant)
        minutes, preference, flavor = self._check_fields(req)
        dataset_id = self._find_dataset(tenant, req.dataset_id, allow_deleted=False)
        init_prefix = ""
        incremental = req.incremental_model_version
        if incremental == "best":
            incremental = self.best_model_version(tenant, dataset_id)
            if not incremental:
                raise FailedPrecondition(f"incremental_model_version: dataset {shown(req.dataset_id)} has no model version yet")
        if incremental:
            parent = self.store.model_version(dataset_id, incremental)
            if parent is None:
                raise NotFound(f"incremental_model_version: dataset {shown(req.dataset_id)} has no model version {shown(incremental)}")
            if not parent.get("artifactPrefix"):
                raise FailedPrecondition(f"model version {incremental} has no saved weights to start from")
            init_prefix = parent["artifactPrefix"]
            preference = self._continued_preference(req.preference, incremental, parent) or preference
        # Side effects start here, after every check passed.
        if req.dataset_version:
            version = self.datasets.get_version(tenant, dataset_id, req.dataset_version)
        else:
            version = self.datasets.publish_version(tenant, dataset_id, req.new_version_name, req.train_ratio, req.seed)
        limit_minutes = minutes
        deadline_reason = "DURATION_LIMIT"
        if flavor.max_job_minutes is not None and flavor.max_job_minutes < minutes:
            limit_minutes, deadline_reason = flavor.max_job_minutes, "FREE_FLAVOR_HOUR" if flavor.is_free else "DURATION_LIMIT"
        job_id = "job-" + secrets.token_hex(5)
        params = {
            "datasetVersion": version.name,
            "trainRatio": version.train_ratio,
            "seed": req.seed,
            "incrementalModelVersion": incremental,
            "maxDurationMinutes": minutes,
            "preference": preference,
            "flavorId": flavor.id,
            "freeTermsAccepted": req.accept_free_terms,
            "maxEpochs": req.max_epochs,
            "manifestKey": version.manifest_key,
            "initArtifactPrefix": init_prefix,
        }
        now = self.clock()
        with self.store.transaction() as tx:
            place = 1 + sum(1 for j in self.store.jobs_in_states(("QUEUED",), tx) if j.flavor_id == flavor.id)
            wait = "waiting to be scheduled"
            self.store.insert_job(tx, {
                "id": job_id, "request_id": req.request_id or None, "request_fields": recorded,
                "tenant": tenant, "dataset_id": dataset_id, "flavor_id": flavor.id, "params": params, "state": "QUEUED",
                "create_time": now,
                "duration_limit": limit_minutes * self.settings.minute_seconds, "deadline_reason": deadline_reason,
                "queue_position": place, "wait_reason": wait,
            })
            self.store.append_event(tx, job_id, now, {"stateChange": {"state": "TRAINING_JOB_STATE_QUEUED",
                                                                       "message": f"for {flavor.display_name}"}})
            self.store.append_event(tx, job_id, now, {"queuePosition": {"position": place, "jobsAhead": place - 1,
                                                                         "waitReason": wait}})
        log.info("job.created", job_id=job_id, dataset_id=dataset_id, version=version.name, flavor=flavor.id)
        self._wake()  # the dispatcher thread takes it from here
        return self.get_job(tenant, job_id)

    def _check_creation_rate(self, tenant: str) -> None:
        limit = self.settings.job_creations_per_minute
        if not limit:
            return
        window = 60.0
        recent = self.store.jobs_created_since(tenant, self.clock() - window)
        if len(recent) >= limit:
            retry = max(1, math.ceil(recent[-limit] + window - self.clock()))
            raise ResourceExhausted(
                f"job creations per tenant per minute: tenant {tenant!r} created {len(recent)} jobs in the last "
                f"minute, the limit is {limit}; retry in {retry} s")

    @staticmethod
    def _continued_preference(requested: str, version: str, parent: dict[str, Any]) -> str:
        """The preference an incremental job trains with: its parent's, which chose the architecture
        the weights belong to (S6). Left out, it is the parent's; another one is refused, since its
        model is not the parent's. "" for a parent that recorded none."""
        # the architecture says which preset trained it; the recorded preference may not (earlier
        # releases recorded the child's requested one)
        trained = PRESET_OF_ARCHITECTURE.get(parent.get("architecture", "")) or (
            parent.get("parameters", {}).get("preference", "").removeprefix("TRAINING_PREFERENCE_"))
        if not trained or trained == "UNSPECIFIED":
            return ""
        if requested and requested != trained:
            architecture = f" ({parent['architecture']})" if parent.get("architecture") else ""
            raise FailedPrecondition(
                f"preference: model version {version} was trained with {trained.lower()}{architecture}, and "
                f"incremental training keeps its architecture; leave preference out (or choose {trained.lower()}) "
                f"to continue it, or train from scratch with {requested.lower()}"
            )
        return trained

    def _flavor(self, flavor_id: str) -> Flavor:
        flavor = self.catalog.flavors.get(flavor_id)
        if flavor is None:
            raise InvalidArgument.field(
                "flavor_id", f"{shown(flavor_id)} is not a flavor; choose one of {', '.join(self.catalog.flavors)}"
            )
        return flavor

    # reads -----------------------------------------------------------------------
    def get_job(self, tenant: str, job_id: str) -> Job:
        """The tenant's job; another tenant's job is NOT_FOUND, as if it did not exist."""
        if not job_id:
            raise InvalidArgument.field("job_id", "is required")
        job = self.store.get_job(job_id)
        if job is None or job.tenant != tenant:
            raise NotFound(f"training job {shown(job_id)} does not exist")
        return job

    def list_jobs(self, tenant: str, dataset_id: str, page_size: int, page_token: str) -> tuple[list[Job], str]:
        offset, limit = paging.page(page_size, page_token)
        resolved = self._find_dataset(tenant, dataset_id, allow_deleted=True) if dataset_id else None
        jobs = self.store.list_jobs(tenant, resolved, offset, limit)
        return jobs, paging.next_token(offset, limit, len(jobs))

    def _check_watch(self, tenant: str, job_id: str, after_sequence: int) -> None:
        """Refuse an `after_sequence` outside the job's log: below the events kept, or past the last one.

        The job's last sequence only grows, and an event is visible only once its job row says so
        (one transaction), so a sequence a client was ever shown is never refused as too high.
        """
        job = self.get_job(tenant, job_id)
        if after_sequence < 0:
            raise InvalidArgument.field("after_sequence", f"must not be negative, got {after_sequence}")
        if after_sequence > job.last_sequence:
            last = f"{job.last_sequence} (the job has ended)" if job.final else f"{job.last_sequence} so far"
            raise OutOfRange(
                f"after_sequence: {after_sequence} is past the last event of job {job_id}, sequence {last}; "
                f"watch from after_sequence 0 to {job.last_sequence}"
            )
        if after_sequence < job.first_sequence - 1:
            raise OutOfRange(
                f"after_sequence: events 1 to {job.first_sequence - 1} of job {job_id} were pruned after it ended; "
                f"watch from after_sequence {job.first_sequence - 1} or later"
            )

    async def watch_async(self, tenant: str, job_id: str, after_sequence: int,
                          ready: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[Event]:
        """The job's events after `after_sequence`: stored ones, then live ones, until the final event.

        Watching an ended job from its last sequence ends at once, with no event. `ready` is
        awaited once the request is checked (the servicer sends the response headers then, so a
        client knows its watch is established before a quiet job's first event). A coroutine
        per watcher (the scheduler serves on grpc.aio), so watchers cost no threads.
        """
        await asyncio.to_thread(self._check_watch, tenant, job_id, after_sequence)
        if ready is not None:  # the watch is accepted: tell the client now, not at the first event
            await ready()
        async for event in self.feed.follow_async(job_id, after_sequence, lambda: not self._stopping.is_set()):
            yield event
            if event.final:
                return
        self._check_stopping()

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise Unavailable("the scheduler is shutting down; watch again from the last sequence")

    def flavors(self) -> list[tuple[Flavor, int, int, int]]:
        """Each flavor with (capacity, slots in use, queue length): the slots of the trainers that
        serve it, and how many of those run a job of any flavor (a trainer's slots are shared by
        the flavors it serves, so a slot busy with another flavor's job is not free for this one)."""
        trainers = self.store.trainers()
        active = self.store.jobs_in_states(ACTIVE_STATES)
        queued = self.store.jobs_in_states(("QUEUED",))
        statuses = []
        for flavor in self.catalog.flavors.values():
            serving = {t.id: t.slots for t in trainers if flavor.id in t.flavors}
            busy = Counter(j.trainer_id for j in active if j.trainer_id in serving)
            statuses.append((
                flavor,
                sum(serving.values()),
                sum(min(count, serving[trainer]) for trainer, count in busy.items()),
                sum(1 for j in queued if j.flavor_id == flavor.id),
            ))
        return statuses

    # Model versions belong to a dataset, so to its tenant: every read resolves the dataset
    # through the dataset service acting for the caller, which answers NOT_FOUND for another's.
    # They outlive their dataset: once it is deleted they stay readable by its id (`_find_dataset`).
    def model_versions(self, tenant: str, dataset_id: str, page_size: int, page_token: str) -> tuple[list[dict[str, Any]], str]:
        resolved = self._find_dataset(tenant, dataset_id, allow_deleted=True)
        offset, limit = paging.page(page_size, page_token)
        versions = self.store.model_versions(resolved, offset, limit)
        return versions, paging.next_token(offset, limit, len(versions))

    def best_model_version(self, tenant: str, dataset_id: str) -> str:
        """The version with the highest macro precision (S4's usual starting point); "" when none."""
        versions = self.store.model_versions(self._find_dataset(tenant, dataset_id, allow_deleted=True))
        best = max(versions, key=lambda v: (v.get("evaluation", {}).get("macro", {}).get("precision", 0.0), v["version"]), default=None)
        return best["version"] if best else ""

    def model_version(self, tenant: str, dataset_id: str, version: str) -> dict[str, Any]:
        resolved = self._find_dataset(tenant, dataset_id, allow_deleted=True)
        if not version:
            raise InvalidArgument.field("version", "is required")
        body = self.store.model_version(resolved, version)
        if body is None:
            raise NotFound(f"dataset {shown(dataset_id)} has no model version {shown(version)}")
        return body

    def predict(self, tenant: str, dataset_id: str, version: str, images: list[bytes], top_k: int) -> list[list[tuple[str, float]]]:
        body = self.model_version(tenant, dataset_id, version)
        return self.trainers.predict(self._any_trainer().address, body["artifactPrefix"], images, top_k)

    def artifact(self, tenant: str, dataset_id: str, version: str, name: str) -> Iterator[bytes]:
        body = self.model_version(tenant, dataset_id, version)
        return self.trainers.artifact(self._any_trainer().address, body["artifactPrefix"], name)

    def _find_dataset(self, tenant: str, id_or_name: str, *, allow_deleted: bool) -> str:
        """The id of the dataset a call names: a live one of the tenant's or, when `allow_deleted`
        (reads of jobs and model versions), one it deleted. A new job (`allow_deleted` False) on a
        deleted dataset is NOT_FOUND saying so.

        A deleted dataset is found by its id only (its name is free for a new dataset), and only
        by a tenant that had jobs on it, so another tenant still gets the NOT_FOUND of a missing one.
        """
        try:
            return self.datasets.resolve_dataset(tenant, id_or_name)
        except NotFound:
            if not self.store.tenant_used_dataset(tenant, id_or_name):
                raise
            if not allow_deleted:
                raise NotFound(f"dataset {shown(id_or_name)} was deleted; a new training job cannot use it "
                               "(its jobs and model versions stay readable by this id)") from None
            return id_or_name

    def _any_trainer(self) -> Trainer:
        """A live trainer to serve a model; serving needs no slot."""
        trainers = self._live_trainers()
        if not trainers:
            raise Unavailable("no trainer is registered to serve models")
        return trainers[0]

    def usage(self, tenant: str | None, start: float | None, end: float | None) -> list[tuple[str, str, int, float, float]]:
        """Billed usage in a period: one tenant's, or every tenant's (`tenant` None: an admin asks).

        `start` None is the beginning of time, `end` None is now; 0 is the epoch, like any time.
        """
        left_out = end is None
        start = BEGINNING_OF_TIME if start is None else start
        end = self.clock() if end is None else end
        if end <= start:
            raise InvalidArgument.field("end_time", "must be after start_time" + (" (left out, end_time is now)" if left_out else ""))
        return self.store.usage(start, end, tenant)

    # cancellation ----------------------------------------------------------------
    def cancel(self, tenant: str, job_id: str) -> Job:
        """Cancel at once; a running trainer is told to stop. A cancelled job makes no model version."""
        job = self.get_job(tenant, job_id)
        if job.final:
            raise FailedPrecondition(f"training job {job_id} has ended already ({job.state.lower()})")
        self._finish(job_id, "CANCELLED", "CANCELLED", "cancelled by the user")
        if job.trainer_id:
            self._stop_on_trainer(job.trainer_id, job_id, "CANCELLED")
        return self.get_job(tenant, job_id)

    # trainers --------------------------------------------------------------------
    def register_trainer(self, trainer_id: str, address: str, flavor_ids: list[str], slots: int, device: str) -> float:
        if not trainer_id:
            raise InvalidArgument.field("trainer_id", "is required")
        if not address:
            raise InvalidArgument.field("address", "is required")
        if slots < 1:
            raise InvalidArgument.field("slots", "must be at least 1")
        unknown = [f for f in flavor_ids if f not in self.catalog.flavors]
        if unknown or not flavor_ids:
            raise InvalidArgument.field("flavor_ids", f"unknown or missing flavors: {shown(unknown) if unknown else 'none given'}")
        self.store.upsert_trainer(Trainer(trainer_id, address, flavor_ids, slots, device, self.clock()))
        self._wake()
        return self.settings.heartbeat_timeout_seconds

    def _live_trainers(self) -> list[Trainer]:
        now = self.clock()
        return [t for t in self.store.trainers() if now - t.last_seen <= self.settings.heartbeat_timeout_seconds]

    # the dispatcher loop ---------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._drop_lost_trainers()
                self._enforce_deadlines()
                self._fail_jobs_of_deleted_datasets()
                self._dispatch_once()
                self._prune_events()
            except Exception:  # the loop must survive anything; log and go on
                log.exception("dispatcher.error")
            with self._changed:
                self._changed.wait(timeout=self.settings.dispatch_interval_seconds)

    def _prune_events(self) -> None:
        now = self.clock()
        if now - self._last_prune < 3600:
            return
        self._last_prune = now
        pruned = self.store.prune_events(now - self.settings.event_retention_seconds)
        if pruned:
            log.info("events.pruned", count=pruned)

    def _drop_lost_trainers(self) -> None:
        now = self.clock()
        for trainer in self.store.trainers():
            if now - max(trainer.last_seen, self._listening_since) > self.settings.heartbeat_timeout_seconds:
                log.warning("trainer.lost", trainer_id=trainer.id, silent_seconds=round(now - trainer.last_seen, 1))
                jobs = [j for j in self.store.jobs_in_states(ACTIVE_STATES) if j.trainer_id == trainer.id]
                # One transaction: whoever sees a job failed sees the trainer gone, and a crash between
                # the two cannot leave jobs on a trainer that no longer exists.
                with self.store.transaction() as tx:
                    self.store.delete_trainer(tx, trainer.id)
                    for job in jobs:
                        self._finish_tx(tx, job.id, "FAILED", "TRAINER_LOST", f"trainer {trainer.id} stopped answering",
                                        now)
                self._wake()

    def _enforce_deadlines(self) -> None:
        now = self.clock()
        for job in self.store.jobs_in_states(ACTIVE_STATES):
            deadline = job.deadline
            if deadline is None or now < deadline:
                continue
            if not job.stop_requested:
                with self.store.transaction() as tx:
                    self.store.update_job(tx, job.id, stop_requested=job.deadline_reason)
                    self.store.append_event(tx, job.id, now, {"log": {"level": "info", "message": "duration limit reached; stopping and saving the best model"}})
                self._wake()
                self._stop_on_trainer(job.trainer_id, job.id, job.deadline_reason)
            elif now > deadline + self.settings.stop_grace_seconds:
                self._finish(
                    job.id, "FAILED", job.deadline_reason,
                    f"the trainer did not stop within {self.settings.stop_grace_seconds:g} s of the duration limit",
                )
                self._stop_on_trainer(job.trainer_id, job.id, "CANCELLED")

    def _dataset_exists(self, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], bool | None]:
        """For each (tenant, dataset id): True while the dataset exists, False once deleted, None when unknown.

        Asked of the dataset service acting for the job's tenant, outside any transaction.
        """
        answers: dict[tuple[str, str], bool | None] = {pair: None for pair in pairs}
        give_up = time.monotonic() + DATASET_CHECKS_SECONDS  # a slow dataset service must not hold up dispatch
        for tenant, dataset_id in sorted(pairs):
            if time.monotonic() >= give_up:
                log.warning("dataset.checks_cut_short", unchecked=sum(a is None for a in answers.values()))
                break
            try:
                # by id; a live dataset that took the deleted one's id as its name is another dataset
                answers[(tenant, dataset_id)] = (
                    self.datasets.resolve_dataset(tenant, dataset_id, timeout=DATASET_CHECK_TIMEOUT) == dataset_id)
            except NotFound:
                answers[(tenant, dataset_id)] = False
            except TrainyardError as exc:
                log.warning("dataset.check_failed", dataset_id=dataset_id, tenant=tenant, error=exc.message)
                answers[(tenant, dataset_id)] = None
        return answers

    def _fail_deleted_tx(self, tx, job: Job, now: float) -> None:
        self._finish_tx(tx, job.id, "FAILED", "ERROR",
                        f"dataset {job.dataset_id} was deleted before the job started; "
                        "the job did not run, made no model version and was not billed", now)

    def _fail_jobs_of_deleted_datasets(self) -> None:
        """Every `dataset_check_seconds`: end the queued jobs whose dataset was deleted.

        Dispatch checks a job's dataset again right before starting it; this sweep makes a
        job that would wait long (a busy free queue, no trainer) end soon after the deletion.
        """
        now = self.clock()
        if now - self._last_dataset_check < self.settings.dataset_check_seconds:
            return
        self._last_dataset_check = now
        queued = self.store.jobs_in_states(("QUEUED",))
        exists = self._dataset_exists({(j.tenant, j.dataset_id) for j in queued})
        gone = [j for j in queued if exists[(j.tenant, j.dataset_id)] is False]
        if not gone:
            return
        with self.store.transaction() as tx:
            for job in gone:
                current = self.store.get_job(job.id, tx)
                if current is not None and current.state == "QUEUED":
                    self._fail_deleted_tx(tx, current, self.clock())
        self._wake()

    def _dispatch_once(self) -> None:
        """Start every queued job that has a slot and quota; refresh queue positions.

        Queues are FIFO per flavor, best-effort: a job that waits only for its
        tenant's quota lets later jobs of other tenants pass, so one tenant cannot
        block a flavor; its place never goes back.

        A job is started only once the dataset service confirms that its dataset still
        exists; a job whose dataset was deleted while it waited ends FAILED instead, so it
        never reaches a trainer (whose objects may be purged by then). While the dataset
        service cannot answer, the job keeps its place and waits.
        """
        planned = self._plan_dispatch()
        if not planned:
            return
        exists = self._dataset_exists({(job.tenant, job.dataset_id) for job, _, _ in planned})
        started: list[str] = []
        with self.store.transaction() as tx:
            now = self.clock()
            for planned_job, trainer, place in planned:
                job = self.store.get_job(planned_job.id, tx)
                if job is None or job.state != "QUEUED":  # cancelled meanwhile
                    continue
                answer = exists[(job.tenant, job.dataset_id)]
                if answer is False:
                    self._fail_deleted_tx(tx, job, now)
                    continue
                if answer is None:  # held back: it keeps its place at the head of the queue
                    wait = f"waiting for the dataset service to confirm that dataset {job.dataset_id} still exists"
                    if wait != job.wait_reason or place != job.queue_position:
                        self.store.update_job(tx, job.id, queue_position=place, wait_reason=wait)
                        self.store.append_event(tx, job.id, now, {"queuePosition": {
                            "position": place, "jobsAhead": place - 1, "waitReason": wait}})
                    continue
                self.store.update_job(tx, job.id, state="STARTING", trainer_id=trainer.id, start_time=now,
                                      queue_position=0, wait_reason="")
                self.store.append_event(tx, job.id, now, {"stateChange": {
                    "state": "TRAINING_JOB_STATE_STARTING", "message": f"dispatched to trainer {trainer.id}"}})
                started.append(job.id)
        self._wake()
        for job_id in started:
            log.info("job.dispatched", job_id=job_id)
            self._start_runner(job_id, attach=False)

    def _plan_dispatch(self) -> list[tuple[Job, Trainer, int]]:
        """The queued jobs that have a slot and quota now, each with its trainer and its place in its
        flavor's queue; refreshes the queue positions of the others (a planned job counts ahead of
        them until it starts).

        Only the dispatcher thread starts jobs, so the slots planned here stay free until they are taken.
        """
        planned: list[tuple[Job, Trainer, int]] = []
        with self.store.transaction() as tx:
            queued = self.store.jobs_in_states(("QUEUED",), tx)
            if not queued:
                return planned
            active = self.store.jobs_in_states(ACTIVE_STATES, tx)
            trainers = self._live_trainers()
            used = {t.id: sum(1 for j in active if j.trainer_id == t.id) for t in trainers}
            position: dict[str, int] = {}
            now = self.clock()
            for job in queued:
                flavor = self.catalog.flavors[job.flavor_id]
                tenant_active = sum(1 for j in active if j.tenant == job.tenant and j.flavor_id == job.flavor_id)
                serving = [t for t in trainers if job.flavor_id in t.flavors]
                free = [t for t in serving if used[t.id] < t.slots]
                quota = flavor.tenant_concurrency_quota
                if quota and tenant_active >= quota:
                    wait = f"your quota of {quota} running job(s) on {flavor.display_name} is in use"
                elif not serving:
                    wait = f"no trainer serves {flavor.display_name} right now"
                elif not free:
                    wait = f"waiting for a free slot on {flavor.display_name}"
                else:
                    wait = ""
                position[job.flavor_id] = position.get(job.flavor_id, 0) + 1
                place = position[job.flavor_id]
                if not wait:
                    trainer = free[0]
                    used[trainer.id] += 1
                    active.append(job)  # counts against its tenant's quota for the jobs after it
                    planned.append((job, trainer, place))
                    continue
                if place != job.queue_position or wait != job.wait_reason:
                    self.store.update_job(tx, job.id, queue_position=place, wait_reason=wait)
                    self.store.append_event(tx, job.id, now, {"queuePosition": {
                        "position": place, "jobsAhead": place - 1, "waitReason": wait}})
        self._wake()
        return planned

    # following a trainer ---------------------------------------------------------
    def _start_runner(self, job_id: str, attach: bool) -> None:
        with self._runners_lock:
            if job_id in self._runners and self._runners[job_id].is_alive():
                return
            thread = threading.Thread(target=self._follow, args=(job_id, attach), name=f"run-{job_id}", daemon=True)
            self._runners[job_id] = thread
        thread.start()

    def _spec(self, job: Job) -> TrainingSpec:
        p = job.params
        return TrainingSpec(
            job_id=job.id, dataset_id=job.dataset_id, dataset_version=p["datasetVersion"],
            manifest_key=p["manifestKey"], preference=p["preference"], seed=p["seed"],
            deadline=job.deadline or self.clock() + job.duration_limit, deadline_reason=job.deadline_reason,
            init_artifact_prefix=p["initArtifactPrefix"], artifact_prefix=f"models/{job.dataset_id}/{job.id}/",
            max_epochs=p["maxEpochs"],
        )

    def _follow(self, job_id: str, attach: bool) -> None:
        """Stream the job's trainer events into the log until the outcome; re-attach after breaks."""
        while not self._stopping.is_set():
            job = self.store.get_job(job_id)
            if job is None or job.final:
                return
            trainer = next((t for t in self.store.trainers() if t.id == job.trainer_id), None)
            if trainer is None:  # dropped as lost; the dispatcher failed the job
                return
            # Starting is idempotent on the trainer (a known job id attaches), so until the
            # trainer has reported anything the job may be (re)sent. Once it has, a trainer
            # that no longer knows the job was restarted: the run is lost, never re-run.
            attach_only = attach and job.trainer_seq > 0
            try:
                for update in self.trainers.run(trainer.address, self._spec(job), job.trainer_seq, attach_only):
                    if self._apply(job_id, update):
                        return
            except NotFound:
                self._finish(job_id, "FAILED", "TRAINER_LOST", f"trainer {trainer.id} no longer knows the job")
                return
            except TrainyardError as exc:
                log.warning("job.stream_broken", job_id=job_id, error=exc.message)
            attach = True
            self._stopping.wait(1.0)

    def _apply(self, job_id: str, update: TrainerUpdate) -> bool:
        """Record one trainer event; True once the job has ended."""
        now = self.clock()
        with self.store.transaction() as tx:
            job = self.store.get_job(job_id, tx)
            if job is None or job.final:
                return True
            if update.sequence <= job.trainer_seq:
                return False  # replayed after a re-attach: recorded already
            fields: dict[str, Any] = {"trainer_seq": update.sequence}
            if update.kind == "progress":
                if job.state == "STARTING":
                    fields["state"] = "RUNNING"
                    self.store.append_event(tx, job_id, now, {"stateChange": {"state": "TRAINING_JOB_STATE_RUNNING"}})
                fields["latest_progress"] = update.body
                self.store.append_event(tx, job_id, now, {"progress": update.body})
                self.store.update_job(tx, job_id, **fields)
            elif update.kind == "log":
                self.store.append_event(tx, job_id, now, {"log": update.body})
                self.store.update_job(tx, job_id, **fields)
            else:
                self.store.update_job(tx, job_id, **fields)
                self._record_outcome(tx, job, update.body, now)
        self._wake()
        return update.kind == "outcome"

    def _record_outcome(self, tx, job: Job, outcome: dict[str, Any], now: float) -> None:
        reason = outcome.get("stopReason", "STOP_REASON_UNSPECIFIED").removeprefix("STOP_REASON_")
        if reason == "ERROR" or not outcome.get("artifactPrefix"):
            message = outcome.get("errorMessage") or "training ended without a model"
            self._finish_tx(tx, job.id, "FAILED", reason if reason != "UNSPECIFIED" else "ERROR", message, now)
            return
        body = {
            "datasetId": job.dataset_id, "jobId": job.id, "datasetVersion": job.params["datasetVersion"],
            "parameters": _parameters(job.params), "evaluation": outcome.get("evaluation", {}),
            "stopReason": "STOP_REASON_" + reason, "artifactPrefix": outcome["artifactPrefix"],
            "createTime": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "architecture": outcome.get("architecture", ""),
            "initialization": outcome.get("initialization", ""), "epochsRun": outcome.get("epochsRun", 0),
            "bestEpoch": outcome.get("bestEpoch", 0), "device": outcome.get("device", ""),
            "trainingTime": outcome.get("trainingTime", "0s"),
        }
        version = self.store.insert_model_version(tx, job.dataset_id, job.id, now, body)
        self.store.update_job(tx, job.id, model_version=version)
        self.store.append_event(tx, job.id, now, {"result": {"modelVersion": {**body, "version": version}}})
        self._finish_tx(tx, job.id, "COMPLETED", reason, f"model version {version} created", now)

    def _finish(self, job_id: str, state: str, reason: str, message: str) -> None:
        with self.store.transaction() as tx:
            self._finish_tx(tx, job_id, state, reason, message, self.clock())
        self._wake()

    def _finish_tx(self, tx, job_id: str, state: str, reason: str, message: str, now: float) -> None:
        job = self.store.get_job(job_id, tx)
        if job is None or job.final:
            return
        fields: dict[str, Any] = {"state": state, "stop_reason": reason, "end_time": now, "queue_position": 0, "wait_reason": ""}
        flavor = self.catalog.flavors.get(job.flavor_id)
        if job.start_time is not None and flavor is not None and not flavor.is_free:
            fields["billed_seconds"] = max(0.0, now - job.start_time)
            fields["cost"] = fields["billed_seconds"] * flavor.price_per_hour / 3600
        if state == "FAILED":
            fields["error_message"] = message
        self.store.update_job(tx, job_id, **fields)
        self.store.append_event(
            tx, job_id, now,
            {"stateChange": {"state": f"TRAINING_JOB_STATE_{state}", "stopReason": f"STOP_REASON_{reason}", "message": message}},
            final=True,
        )
        log.info("job.finished", job_id=job_id, state=state, reason=reason)

    def _stop_on_trainer(self, trainer_id: str, job_id: str, reason: str) -> None:
        trainer = next((t for t in self.store.trainers() if t.id == trainer_id), None)
        if trainer is None:
            return

        def stop() -> None:
            try:
                self.trainers.stop(trainer.address, job_id, reason)
            except TrainyardError as exc:
                log.warning("trainer.stop_failed", job_id=job_id, error=exc.message)

        threading.Thread(target=stop, name=f"stop-{job_id}", daemon=True).start()


def _parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The TrainingParameters proto-JSON of a job's stored parameters."""
    keys = ("datasetVersion", "trainRatio", "seed", "incrementalModelVersion", "maxDurationMinutes",
            "flavorId", "freeTermsAccepted", "maxEpochs")
    out = {k: params[k] for k in keys}
    out["seed"] = str(out["seed"])
    out["preference"] = "TRAINING_PREFERENCE_" + params["preference"]
    return out
