"""One local stack for every fault round, the dataset the jobs train on, and the loss table at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.stacks import running_stack
from tests.faults.report import REPORT, RESULTS
from tests.faults.workload import JOB, ROUNDS, SEED, FaultEnv, File
from trainyard.errors import TrainyardError
from trainyard.objectstore import ObjectStore
from trainyard.sample_data import digit_files
from trainyard.stack.local import LocalStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalStack]:
    """A stack of its own (its processes get killed); a trainer silent for 4 s is lost."""
    yield from running_stack(tmp_path_factory.mktemp("faults"), heartbeat_seconds=0.5, heartbeat_timeout_seconds=4.0)


@pytest.fixture(scope="module")
def faults(stack) -> FaultEnv:
    print(f"\nfault runs: seed {SEED} (replay with TRAINYARD_FAULT_SEED={SEED}), {ROUNDS} round(s) per component")
    client = stack.client()
    tenant2 = stack.client(api_key=stack.create_api_key("faults-t2"))
    deadline = time.monotonic() + 10
    while True:  # the services see a new key within a second
        try:
            tenant2.list_datasets()
            break
        except TrainyardError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    by_class: dict[str, list[File]] = {}
    for file in digit_files():
        by_class.setdefault(file[1], []).append(file)
    first = [f for files in by_class.values() for f in files[:5]]
    batches = [list(batch) for batch in zip(*(files[5:] for files in by_class.values()), strict=False)]
    probe_file = batches.pop()[0]

    jobs_dataset = client.create_dataset("faults-jobs")
    client.upload_images(jobs_dataset.id, first)
    for _ in range(2):  # the first job also warms the trainer up; the second one is timed
        warm = client.wait(client.create_training_job(jobs_dataset.id, **JOB).id)
        assert warm.state == "completed", warm.error_message
    job_seconds = (warm.end_time - warm.start_time).total_seconds()
    print(f"one job runs {job_seconds:.1f} s")
    return FaultEnv(
        stack=stack, client=client, tenant2=tenant2, objects=ObjectStore.from_endpoint(stack.s3.endpoint),
        jobs_dataset=jobs_dataset.id, jobs_dataset_images=len(first),
        jobs_version=warm.parameters.dataset_version, first_upload=first,
        upload_batches=batches, probe_file=probe_file, job_seconds=[job_seconds],
    )


def pytest_terminal_summary(terminalreporter, config) -> None:
    report = config.stash.get(REPORT, None)
    if report is None or not report.rounds:
        return
    terminalreporter.section("fault runs: kill -9 at random moments")
    terminalreporter.write_line(report.table())
    if RESULTS is None:
        terminalreporter.write_line("not written (TRAINYARD_FAULT_RESULTS=bench/results/faults.json records it)")
    elif report.write():
        terminalreporter.write_line(f"written to {RESULTS}")
    else:
        terminalreporter.write_line(f"not every component ran: {RESULTS} left as it was")
