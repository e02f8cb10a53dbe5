"""kill -9 each component at a random moment while a job trains, uploads stream and watchers follow.

For each of the scheduler, the trainer, the dataset service and the S3 server,
TRAINYARD_FAULT_ROUNDS rounds (default 3) on one stack. A round starts an
uploader and a publisher (tenant 2), creates a training job (tenant 1) and
watches it; at a random moment it kills the component with SIGKILL, creates a
second job around the outage, waits a random short time, restarts the
component, and then counts what was lost. The moments come from a seeded
random generator (TRAINYARD_FAULT_SEED replays a run).

Designed outcomes (docs/scheduler.md): a job survives a scheduler, dataset or
S3 restart (the trainer waits up to two minutes for an unreachable object store);
a job running on a killed trainer ends FAILED with TRAINER_LOST and is never
re-run. A job that vanishes or never ends counts as
lost; any other end fails the test too. docs/operations.md ("Fault tests")
defines every figure of the table.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.test_restarts import wait_state, watch_in_background
from tests.faults.report import COMPONENTS, COUNTS, Round, report_of, summary
from tests.faults.workload import (
    CALL_TIMEOUT,
    JOB,
    ROUNDS,
    SEED,
    Background,
    FaultEnv,
    Losses,
    Publisher,
    Uploader,
    check_images,
    check_versions,
    check_watchers,
    sha256,
)
from trainyard.errors import NotFound, TrainyardError, Unavailable
from trainyard.rpc import channel
from trainyard.stack.local import SERVICES

pytestmark = pytest.mark.faults

FINAL = {"completed", "failed", "cancelled"}
ALLOWED = {  # the ends a job that lived through the kill may have (see the module's docstring)
    "scheduler": {"completed"},
    "dataset": {"completed"},
    "trainer": {"completed", "failed/trainer_lost"},
    "s3": {"completed"},
}


class Creator(threading.Thread):
    """Creates the round's second job around the outage; the SDK retries it under one request id."""

    def __init__(self, env: FaultEnv) -> None:
        super().__init__(name="creator", daemon=True)
        self.env, self.request_id = env, uuid.uuid4().hex
        self.job_id, self.error = "", None

    def run(self) -> None:
        try:
            self.job_id = self.create()
        except TrainyardError as exc:
            self.error = exc

    def create(self) -> str:
        return self.env.client.create_training_job(
            self.env.jobs_dataset, request_id=self.request_id, timeout=CALL_TIMEOUT, **JOB).id


def kill(env: FaultEnv, component: str) -> None:
    if component == "s3":
        env.stack.s3.kill()
    else:
        env.stack.kill(component)


def restart(env: FaultEnv, component: str) -> None:
    if component == "s3":
        env.stack.s3.start()  # same port, data and credentials
    else:
        env.stack.start_service(component)


def recovered(env: FaultEnv) -> bool:
    """Every service SERVING, and a call through each path answers: client -> dataset -> S3,
    client -> scheduler -> dataset. Fresh channels, so a client's reconnect backoff is not counted."""
    for name in SERVICES:
        with channel(env.stack.address(name), env.stack.client_tls) as ch:
            try:
                answer = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            if answer.status != health_pb2.HealthCheckResponse.SERVING:
                return False
    probe = env.stack.client(retries=0)
    try:
        probe.get_dataset(env.jobs_dataset, timeout=2)
        probe.list_jobs(env.jobs_dataset, timeout=2)
        probe.export_manifest(env.jobs_dataset, env.jobs_version, timeout=2)
    except TrainyardError:
        return False
    return True


def object_store_down_answers(env: FaultEnv, dataset_id: str, losses: Losses) -> list[str]:
    """While S3 is down, calls that need it fail UNAVAILABLE naming the object store.

    Returns the ids of jobs created anyway (none expected)."""
    owner, tenant2 = env.stack.client(retries=0), env.tenant2
    created = []
    calls = {
        "UploadImages": lambda: tenant2.upload_images(dataset_id, [env.probe_file], timeout=10),
        "PublishVersion": lambda: tenant2.publish_version(dataset_id, timeout=10),
        "ExportManifest": lambda: owner.export_manifest(env.jobs_dataset, env.jobs_version, timeout=10),
        "CreateTrainingJob": lambda: created.append(owner.create_training_job(env.jobs_dataset, timeout=10, **JOB).id),
    }
    for name, call in calls.items():
        try:
            call()
            losses.problems.append(f"{name} succeeded while the object store was down")
        except Unavailable as exc:
            if "object store" not in exc.message:
                losses.problems.append(f"{name} while S3 was down: UNAVAILABLE without naming the object store: {exc.message}")
        except TrainyardError as exc:
            losses.problems.append(f"{name} while S3 was down gave {exc.code}, not UNAVAILABLE: {exc.message}")
    return created


def background_answers_while_down(loads: list[Background], down: tuple[float, float], losses: Losses) -> None:
    """The load's calls made wholly inside an S3 outage failed UNAVAILABLE, naming the object store."""
    for load in loads:
        for call in load.calls:
            if not (down[0] < call.started and call.ended < down[1]):
                continue
            if call.error is None:
                losses.problems.append(f"{load.name}: a call succeeded while the object store was down")
            elif not (isinstance(call.error, Unavailable) and "object store" in call.error.message):
                losses.problems.append(f"{load.name} while S3 was down: {call.error.code} {call.error.message}")


def follow(plan: list[tuple[float, Callable[[], None]]], began: float) -> None:
    """Run each action at its moment (seconds after `began`), in order; a late one runs at once."""
    for at, action in sorted(plan, key=lambda step: step[0]):
        time.sleep(max(0.0, began + at - time.monotonic()))
        action()


@dataclass
class Fault:
    """The kill of one round and what the round watches through it."""

    env: FaultEnv
    component: str
    r: Round
    uploads: str  # the dataset the load writes to
    job: str  # the job created before the kill
    watchers: dict[str, list] = field(default_factory=dict)  # job id -> (thread, events, errors) of each watcher
    expected_jobs: set[str] = field(default_factory=set)  # every job the API acknowledged
    killed: float = 0.0  # time.monotonic() once the process is dead
    restarting: float = 0.0  # time.monotonic() of the restart command
    restart_wall: float = 0.0  # time.time() of the same, to compare with job end times

    def watch(self, job_id: str) -> None:
        self.watchers.setdefault(job_id, []).append(watch_in_background(self.env.client, job_id))

    def kill(self) -> None:
        states = [e.state for e in list(self.watchers[self.job][0][1]) if e.kind == "state_change"]
        self.r.job_state_at_kill = states[-1] if states else "queued"
        kill(self.env, self.component)
        self.killed = time.monotonic()
        if self.component == "s3":
            self.expected_jobs |= set(object_store_down_answers(self.env, self.uploads, self.r.losses))

    def restart(self) -> None:
        self.restarting, self.restart_wall = time.monotonic(), time.time()
        restart(self.env, self.component)
        deadline = time.monotonic() + 60
        while not recovered(self.env):
            assert time.monotonic() < deadline, f"seed {SEED}: the stack did not recover after {self.component} restarted"
            time.sleep(0.05)
        self.r.recovery_s = round(time.monotonic() - self.restarting, 2)


def run_round(env: FaultEnv, component: str, rng: random.Random, number: int) -> Round:
    """One kill at a random moment of a job's life, with uploads, versions and watchers going on."""
    client, r = env.client, Round(component, number)
    started = time.monotonic()
    r.kill_after_s = round(rng.uniform(0.0, 1.2 * env.job_length()), 2)  # now and then after the job ended
    r.down_s = round(rng.uniform(0.2, 1.5), 2)
    watch2_at = rng.uniform(0.0, r.kill_after_s)
    create2_at = r.kill_after_s + rng.uniform(-1.0, r.down_s + 0.5)

    uploads = env.tenant2.create_dataset(f"faults-{component}-{number}-{secrets.token_hex(3)}")
    uploader = Uploader(env.tenant2, uploads.id, env.first_upload, env.upload_batches)
    publisher = Publisher(env.tenant2, uploader)
    uploader.start()
    publisher.start()
    try:
        jobs_before = {j.id for j in client.list_jobs(env.jobs_dataset)}
        job = client.create_training_job(env.jobs_dataset, **JOB)
        began = time.monotonic()
        fault = Fault(env, component, r, uploads.id, job.id, expected_jobs={job.id})
        fault.watch(job.id)
        creator = Creator(env)
        follow([(watch2_at, lambda: fault.watch(job.id)), (r.kill_after_s, fault.kill), (create2_at, creator.start),
                (r.kill_after_s + r.down_s, fault.restart)], began)
        # the load goes on until each part of it has worked again since the recovery
        up = fault.restarting + r.recovery_s
        settle = time.monotonic() + 20
        while time.monotonic() < settle and uploader.is_alive() and not (
                uploader.succeeded_since(up) and publisher.succeeded_since(up)):
            time.sleep(0.1)
    finally:
        uploader.stop()
        publisher.stop()
    if component == "s3":
        background_answers_while_down([uploader, publisher], (fault.killed, fault.restarting), r.losses)
    if component == "s3":  # the upload refused during the outage left nothing; it stores now
        if sha256(env.probe_file[2]) in {image.id for image in env.tenant2.list_images(uploads.id)}:
            r.losses.count("partial_writes", "the upload refused while S3 was down is listed")
        uploader.upload([env.probe_file])
        if uploader.calls[-1].error is not None:
            r.losses.problems.append(f"the upload refused while S3 was down fails after recovery: {uploader.calls[-1].error}")

    settled = time.monotonic()
    creator.join(timeout=CALL_TIMEOUT + 10)
    if not creator.job_id:  # not acknowledged: the same request id again, now that all is up
        try:
            creator.job_id = creator.create()
        except TrainyardError as exc:
            r.losses.problems.append(f"creating the second job again after recovery failed: {exc.code} {exc.message}")
    if creator.job_id:
        fault.expected_jobs.add(creator.job_id)
        fault.watch(creator.job_id)

    check_jobs(fault, jobs_before)
    jobs_checked = time.monotonic()
    images = check_images(env.tenant2, env.objects, uploader, r.losses)
    check_versions(env.tenant2, env.objects, uploads.id, images, publisher.published, None, r.losses)
    jobs_images = {i.id: i.label for i in client.list_images(env.jobs_dataset)}
    if len(jobs_images) != env.jobs_dataset_images:
        r.losses.count("images_lost", f"the jobs' dataset lists {len(jobs_images)} images, not {env.jobs_dataset_images}")
    job_versions = [(client.get_job(j).parameters.dataset_version, 0) for j in fault.expected_jobs if _exists(client, j)]
    check_versions(client, env.objects, env.jobs_dataset, jobs_images, job_versions, env.jobs_dataset_images, r.losses)
    print(f"{component} round {number}: kill {r.kill_after_s:.2f} s after creation ({r.job_state_at_kill}), "
          f"down {r.down_s:.2f} s, recovered in {r.recovery_s:.2f} s, job ended {r.job_final_s:.2f} s after the "
          f"restart, outcomes {r.outcomes}, {len(uploader.calls)} uploads ({len(uploader.cut)} cut), "
          f"{len(publisher.published)} versions published, second job "
          f"{'retried after recovery (' + str(creator.error) + ')' if creator.error else 'acknowledged at once'}, "
          f"problems {r.losses.problems}; "
          f"timeline: restart at {fault.restarting - started:.1f}, settled {settled - started:.1f}, "
          f"jobs checked {jobs_checked - started:.1f}, done {time.monotonic() - started:.1f} s")
    return r


def _exists(client, job_id: str) -> bool:
    try:
        client.get_job(job_id)
    except NotFound:
        return False
    return True


def check_jobs(fault: Fault, before: set[str]) -> None:
    """Every acknowledged job exists, ends as designed, ran at most once; its watchers saw every event once."""
    env, r = fault.env, fault.r
    client, losses = env.client, r.losses
    for job_id in [fault.job, *sorted(fault.expected_jobs - {fault.job})]:
        try:
            job = wait_state(client, job_id, FINAL, timeout=120)
        except NotFound:
            losses.count("jobs_lost", f"{job_id} was acknowledged and no longer exists")
            continue
        except AssertionError:
            losses.count("jobs_lost", f"{job_id} never reached a final state ({client.get_job(job_id).state})")
            continue
        outcome = job.state if job.state == "completed" else f"{job.state}/{job.stop_reason}"
        r.outcomes.append(outcome)
        if outcome not in ALLOWED[fault.component]:
            losses.problems.append(f"{job_id} ended {outcome}: {job.error_message}")
        elif outcome == "failed/error" and "object store" not in job.error_message:
            losses.problems.append(f"{job_id} failed without naming the object store: {job.error_message}")
        if job_id == fault.job and job.end_time is not None:
            r.job_final_s = round(max(0.0, job.end_time.timestamp() - fault.restart_wall), 2)
        check_watchers(fault.watchers.get(job_id, []), job.last_sequence, job_id, losses)
        events = fault.watchers[job_id][0][1] if job_id in fault.watchers else []
        loads = [e.time for e in events if e.kind == "log" and e.message.startswith("loading dataset version")]
        runs = len(loads)
        if runs > 1:
            losses.problems.append(f"{job_id} ran {runs} times")
        if job.state == "completed":
            versions = [v for v in client.list_model_versions(env.jobs_dataset) if v.job_id == job_id]
            if len(versions) != 1 or runs != 1:
                losses.problems.append(f"{job_id} completed with {len(versions)} model versions after {runs} runs")
            else:  # the run itself, without any wait, sets the scale of the next kill moments
                env.job_seconds.append((job.end_time - loads[0]).total_seconds())
    created = {j.id for j in client.list_jobs(env.jobs_dataset)} - before
    for job_id in sorted(created - fault.expected_jobs):
        losses.problems.append(f"{job_id} was created though nobody asked for it (a retried creation ran twice?)")


@pytest.mark.timeout(120 + 150 * ROUNDS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_kill_at_random_moments_loses_nothing(faults, component, request):
    rng = random.Random(f"{SEED}/{component}")
    rounds = [run_round(faults, component, rng, n) for n in range(1, ROUNDS + 1)]
    report_of(request.config).rounds[component] = rounds
    totals = {name: summary(rounds)[name] for name in COUNTS}
    problems = [f"round {r.number}: {p}" for r in rounds for p in r.losses.problems]
    assert not any(totals.values()) and not problems, (
        f"seed {SEED} (TRAINYARD_FAULT_SEED), {component}: {totals}\n" + "\n".join(problems))


def test_scheduler_down_longer_than_the_heartbeat_timeout_keeps_running_jobs(faults):
    """Trainers cannot heartbeat to a dead scheduler: once back, it must not count that silence
    against them and fail their running jobs TRAINER_LOST (it did, before the fix)."""
    env, client = faults, faults.client
    job = client.create_training_job(env.jobs_dataset, **{**JOB, "max_epochs": 10})
    watchers = [watch_in_background(client, job.id)]
    wait_state(client, job.id, {"running"})
    env.stack.kill("scheduler")
    time.sleep(env.stack.settings.heartbeat_timeout_seconds + 1.5)
    env.stack.start_service("scheduler")
    done = wait_state(client, job.id, FINAL, timeout=120)
    assert (done.state, done.error_message) == ("completed", "")
    losses = Losses()
    check_watchers(watchers, done.last_sequence, job.id, losses)
    assert losses == Losses(), losses
