"""The dataset service killed with SIGKILL and restarted: every acknowledged label change is kept."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.e2e.test_restarts import stack  # noqa: F401 - a stack of its own: these tests kill its processes
from trainyard.errors import TrainyardError
from trainyard.sample_data import digit_files

pytestmark = pytest.mark.e2e


def labels(client, dataset_id: str) -> dict[str, str]:
    """image id → label of every image of the dataset."""
    return {image.id: image.label for image in client.list_images(dataset_id)}


def test_label_changes_acknowledged_before_a_kill_survive_the_restart(stack):  # noqa: F811
    client = stack.client()
    ds = client.create_dataset("kill-labels")
    files = digit_files(per_class=6)
    ids = [r.image_id for r in client.upload_images(ds.id, files).results]
    before = client.publish_version(ds.id)
    expected = labels(client, ds.id)

    # SetLabels: two relabels and a removal, all in one call; then RenameClass.
    assert client.set_labels(ds.id, {ids[0]: "7", ids[1]: "", ids[2]: "8"}) == 3
    expected.update({ids[0]: "7", ids[1]: "", ids[2]: "8"})
    assert client.rename_class(ds.id, "9", "nine") == 6
    expected.update({i: "nine" for i, label in expected.items() if label == "9"})
    assert labels(client, ds.id) == expected

    stack.kill("dataset")
    stack.start_service("dataset")
    again = stack.client()
    assert labels(again, ds.id) == expected
    report = again.check_trainability(ds.id)
    assert report.classes == dict(Counter(label for label in expected.values() if label))
    assert report.classes["nine"] == 6 and "9" not in report.classes
    assert report.unlabeled_image_count == 1
    # a version published after the restart is built from the changed labels
    after = again.publish_version(ds.id, seed=1)
    diff = again.diff_versions(ds.id, before.name, after.name)
    assert list(diff.removed_image_ids) == [ids[1]]
    relabeled = {r.image_id: r.target_label for r in diff.relabeled}
    assert relabeled == {i: expected[i] for i, (_, label, _) in zip(ids, files, strict=True)
                         if expected[i] not in ("", label)}


def test_label_changes_in_flight_during_a_kill_are_all_kept_or_all_lost(stack):  # noqa: F811
    """SetLabels calls run back to back while the service is killed: each acknowledged one is kept, and
    each call (two images per call) is applied whole or not at all."""
    client = stack.client()
    ds = client.create_dataset("kill-labels-in-flight")
    ids = [r.image_id for r in client.upload_images(ds.id, digit_files(per_class=60)).results]
    pairs = [(ids[i], ids[i + 1]) for i in range(0, len(ids), 2)]
    acknowledged: list[int] = []
    failed: list[Exception] = []
    enough, stop = threading.Event(), threading.Event()
    writer_client = stack.client(retries=0)  # a call cut by the kill fails; the test then knows it was not acknowledged

    def write() -> None:
        for n, (a, b) in enumerate(pairs):
            if stop.is_set():
                return
            try:
                writer_client.set_labels(ds.id, {a: f"call-{n}", b: f"call-{n}"}, timeout=10)
            except TrainyardError as exc:
                failed.append(exc)
                return
            acknowledged.append(n)
            if len(acknowledged) == 10:
                enough.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert enough.wait(60), f"the writer did not get 10 calls through: {failed}"
    stack.kill("dataset")
    stop.set()
    writer.join(30)
    assert not writer.is_alive()
    assert failed and len(acknowledged) < len(pairs), "the kill came after the last call: nothing was in flight"
    stack.start_service("dataset")

    after = labels(stack.client(), ds.id)
    assert len(acknowledged) >= 10
    for n, (a, b) in enumerate(pairs):
        label = f"call-{n}"
        if n in acknowledged:
            assert (after[a], after[b]) == (label, label), f"acknowledged call {n} was lost"
        else:
            assert (after[a] == label) == (after[b] == label), f"call {n} was applied in part"
    # at most the one call in flight at the kill may have been applied without an acknowledgement
    applied = [n for n, (a, _) in enumerate(pairs) if after[a] == f"call-{n}"]
    assert set(acknowledged) <= set(applied) and len(set(applied) - set(acknowledged)) <= 1
