"""The `trainyard` CLI against a fake SDK client: messages instead of tracebacks, exit codes,
no partial output, tables that never cut ids, the trainer's ETA, file-by-file predictions."""

from __future__ import annotations

import errno
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from trainyard.cli import display
from trainyard.cli import main as cli
from trainyard.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from trainyard.rpc import MAX_MESSAGE_BYTES
from trainyard.sdk import types


class FakeClient:
    """What the commands under test call; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.artifacts = {name: name.encode() * 10 for name in ("a.bin", "b.bin", "c.bin")}
        self.fail_download_at: tuple[str, BaseException] | None = None
        self.images: list[types.Image] = []
        self.bad_images: dict[bytes, str] = {}
        self.upload_results: list[types.UploadResult] = []
        self.dataset_images: int | BaseException = 0
        self.upload_failure: tuple[int | BaseException, BaseException] | None = None

    def __getattr__(self, name):  # any other call is recorded and answers None
        def call(*args, **kwargs):
            self.calls.append((name, args))
        return call

    def list_flavors(self):
        return [types.Flavor("free-gpu", "Free [GPU]", "free", 1, 0.0, 1, 1, 0, 0, "Be nice. [y/N] is a choice.", None, None),
                types.Flavor("compute-gpu-1", "Compute-intensive 1 instance (GPU)", "pay_per_use", 1, 3.4, 2, 1, 0, 0, "",
                             None, None)]

    def download_artifact(self, dataset, version, name):
        self.calls.append(("download_artifact", (dataset, version, name)))
        if version == "V9":
            raise NotFound(f"dataset {dataset!r} has no model version 'V9'")
        if self.fail_download_at and self.fail_download_at[0] == name:
            raise self.fail_download_at[1]
        return self.artifacts[name]

    def export_manifest(self, dataset, version):
        self.calls.append(("export_manifest", (dataset, version)))
        return b'{"source": "a"}\n{"source": "b"}\n'

    def list_images(self, dataset, label="", unlabeled_only=False):
        self.calls.append(("list_images", (dataset,)))
        return self.images

    def set_labels(self, dataset, labels):
        self.calls.append(("set_labels", (dataset, labels)))
        return len(labels)

    def predict(self, dataset, version, images, top_k):
        self.calls.append(("predict", (len(images),)))
        if sum(map(len, images)) > MAX_MESSAGE_BYTES - 2**10:  # as gRPC refuses a request over its cap
            raise ResourceExhausted("CLIENT: Sent message larger than max")
        for index, data in enumerate(images):
            if data in self.bad_images:
                raise InvalidArgument.field(f"images[{index}]", self.bad_images[data])
        return [[("cat", 0.9), ("dog", 0.1)] for _ in images]

    def get_dataset(self, dataset, timeout=None):
        self.calls.append(("get_dataset", (dataset,)))
        if isinstance(self.dataset_images, BaseException):
            raise self.dataset_images
        if not self.dataset_images:
            raise NotFound(f"no dataset {dataset!r}")
        return SimpleNamespace(id="ds-1", display_name=dataset, image_count=self.dataset_images)

    def create_dataset(self, name, description=""):
        self.calls.append(("create_dataset", (name,)))
        return SimpleNamespace(id="ds-1", display_name=name, image_count=0)

    def upload_folder(self, dataset, folder, on_batch):
        self.calls.append(("upload_folder", (dataset, folder)))
        results = self.upload_results
        summary = types.UploadSummary(results, sum(r.status == "stored" for r in results),
                                      sum(r.status == "duplicate" for r in results), sum(r.status == "rejected" for r in results))
        on_batch(summary, len(results), len(results))
        if self.upload_failure:  # the next batch fails, or is interrupted, after the server stored what it had
            self.dataset_images, error = self.upload_failure
            raise error
        return [summary]

    def called(self, name: str) -> list[tuple]:
        return [args for n, args in self.calls if n == name]


@pytest.fixture
def fake(monkeypatch) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(cli, "_client", lambda args: client)
    return client


@pytest.fixture
def screen(monkeypatch) -> io.StringIO:
    """The CLI's console as an 80-column terminal-less screen."""
    out = io.StringIO()
    monkeypatch.setattr(display, "console", Console(file=out, width=80))
    monkeypatch.setattr(cli, "console", display.console)
    return out


def run(*argv: str) -> int:
    return cli.main(list(argv))


# numbers: the proto fields' ranges, checked by argparse ------------------------------
@pytest.mark.parametrize("argv", [
    ["train", "--dataset", "d", "--seed", "99999999999999999999"],
    ["train", "--dataset", "d", "--max-minutes", "99999999999"],
    ["train", "--dataset", "d", "--max-epochs", "99999999999"],
    ["models", "predict", "d", "V001", "x.png", "--top-k", "9999999999"],
    ["jobs", "watch", "job-1", "--after", "99999999999999999999"],
    ["dataset", "publish", "d", "--seed", "-99999999999999999999"],
])
def test_numbers_out_of_a_fields_range_are_usage_errors(argv, fake, capsys):
    with pytest.raises(SystemExit) as exc:
        run(*argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "out of range" in err and "Traceback" not in err
    assert fake.calls == []


def test_a_number_that_is_not_one_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        run("train", "--dataset", "d", "--seed", "1.5")
    assert exc.value.code == 2 and "'1.5' is not a whole number" in capsys.readouterr().err


# the free terms prompt -----------------------------------------------------------------
class _Typed(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer", ["n\n", "\n", ""])
def test_the_free_terms_prompt_shows_its_choices_and_a_no_creates_nothing(answer, fake, screen, monkeypatch):
    monkeypatch.setattr("sys.stdin", _Typed(answer))
    assert run("train", "--dataset", "d") == cli.EXIT_USAGE
    out = screen.getvalue()
    assert "I have read and agree to the above [y/N]: " in out
    assert "Free [GPU]" in out and "[y/N] is a choice" in out  # markup in the flavor's own text is shown as is
    assert "no job was created" in out
    assert fake.called("create_training_job") == []


def test_ctrl_c_while_a_job_is_created_says_where_to_look(fake, screen, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fake, "create_training_job", interrupted, raising=False)
    assert run("train", "--dataset", "my pets", "--accept-free-terms") == cli.EXIT_INTERRUPTED
    assert "interrupted; the job may have been created: trainyard jobs list --dataset 'my pets' shows it" in screen.getvalue()


# tables ----------------------------------------------------------------------------------
def _job(i: int) -> SimpleNamespace:
    return SimpleNamespace(id=f"job-4f3a2b1c{i:02d}", dataset_id="ds-1234abcd", state="completed", stop_reason="duration_limit",
                           parameters=SimpleNamespace(dataset_version="v12", flavor_id="compute-gpu-1"), model_version="V001",
                           create_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def _model(version: str) -> SimpleNamespace:
    return SimpleNamespace(version=version, evaluation=SimpleNamespace(accuracy=0.98, macro=SimpleNamespace(precision=0.97, recall=0.96, f1=0.95)),
                           architecture="mobilenet_v3_small", parameters=SimpleNamespace(preference="performance_first"),
                           dataset_version="v1", epochs_run=12, stop_reason="duration_limit", job_id="job-4f3a2b1c9d")


@pytest.mark.parametrize("width", [60, 80, 120])
def test_tables_never_cut_the_ids_people_type(width, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(display, "console", Console(file=out, width=width))
    display.console.print(display.job_table([_job(1), _job(2)]))
    display.console.print(display.models_table("digits", [_model("V001"), _model("V002")], "V001"))
    text = out.getvalue()
    assert "…" not in text
    for expected in ("job-4f3a2b1c01", "job-4f3a2b1c02", "ds-1234abcd", "V001 ★", "V002", "v12"):
        assert expected in text, (expected, text)
    if width < 120:
        assert "not shown, to fit the terminal" in text  # what was left out is said


def test_a_terminal_too_narrow_for_the_ids_folds_them_rather_than_cutting_them(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(display, "console", Console(file=out, width=36))
    display.console.print(display.job_table([_job(1), _job(2)]))
    text = out.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= 36, text
    body = [line.split("│")[1:-1] for line in text.splitlines() if line.startswith("│")]
    assert all(len(cells) == 5 for cells in body), text  # no column cut off at the right edge
    columns = ["".join(cells[k].strip() for cells in body) for k in range(5)]
    # each key column's values whole, if folded across lines: job, dataset, version, (state), model
    assert [columns[k] for k in (0, 1, 2, 4)] == ["job-4f3a2b1c01job-4f3a2b1c02", "ds-1234abcd" * 2, "v12" * 2, "V001" * 2], text


def test_flavors_at_80_columns_show_whole_ids(fake, screen):
    assert run("flavors") == 0
    assert "compute-gpu-1" in screen.getvalue() and "free-gpu" in screen.getvalue()


def test_output_to_a_pipe_is_laid_out_wide(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert display._width() == display.PIPED_WIDTH


# ETA --------------------------------------------------------------------------------------
def test_the_job_view_shows_the_trainers_eta_even_when_the_backlog_arrives_at_once(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(display, "console", Console(file=out, width=200))
    events = [types.JobEvent("job-1", n, None, False, "progress",
                             progress=types.Progress(1, 3, n * 10, 100, 1.0, 0.5, None, 0.01, 900.0,
                                                     timedelta(minutes=7, seconds=30 - n), "cpu"))
              for n in range(1, 6)]
    with display.JobView() as view:
        for event in events:  # a replay: all at once
            view.show(event)
    assert "eta 0:07:25" in out.getvalue(), out.getvalue()


def test_eta_text():
    assert display.eta_text(timedelta(hours=1, minutes=2, seconds=3)) == "1:02:03"
    assert display.eta_text(timedelta(0)) == "-:--:--"
    assert display.eta_text(timedelta(0), finished=True) == "0:00:00"


# image ids ----------------------------------------------------------------------------------
def _image(image_id: str, label: str = "cat") -> types.Image:
    return types.Image(image_id, f"{label}/{image_id[:4]}.png", label, "PNG", 8, 8, 118, None, None)


IDS = ["ab12cd" + "0" * 58, "ab12ce" + "1" * 58, "ff" * 32]


def test_dataset_images_shows_ids_that_dataset_label_takes(fake, screen):
    fake.images = [_image(i) for i in IDS]
    assert run("dataset", "images", "d") == 0
    shown = [line.split()[1] for line in screen.getvalue().splitlines() if line.startswith("│")]
    assert shown == ["ab12cd000000", "ab12ce111111", "ffffffffffff"]
    assert run("dataset", "label", "d", f"{shown[0]}=dog", f"{IDS[2]}=") == 0
    assert fake.called("set_labels") == [("d", {IDS[0]: "dog", IDS[2]: ""})]


def test_short_ids_grow_until_they_tell_images_apart():
    similar = ["a" * 20 + "0" * 44, "a" * 20 + "1" * 44]
    assert cli.short_ids(similar) == {similar[0]: "a" * 20 + "0", similar[1]: "a" * 20 + "1"}


def test_an_image_prefix_must_fit_exactly_one_image(fake, screen):
    fake.images = [_image(i) for i in IDS]
    assert run("dataset", "label", "d", "ab12c=dog") == cli.EXIT_USAGE  # too short
    assert run("dataset", "label", "d", "ab12cX=dog") == cli.EXIT_ERROR  # none
    assert "has no image whose id starts with 'ab12cX'" in screen.getvalue()
    fake.images.append(_image("ab12cd" + "2" * 58))
    assert run("dataset", "label", "d", "ab12cd=dog") == cli.EXIT_USAGE  # two
    assert "fits 2 images" in screen.getvalue()
    assert fake.called("set_labels") == []


def test_one_image_given_two_labels_is_a_usage_error(fake, screen):
    fake.images = [_image(i) for i in IDS]
    assert run("dataset", "label", "d", "ab12cd=cat", f"{IDS[0]}=dog") == cli.EXIT_USAGE
    out = screen.getvalue()
    assert "'ab12cd=cat' and" in out and f"'{IDS[0]}=dog' are the same image (ab12cd000000)" in out, out
    assert fake.called("set_labels") == []
    assert run("dataset", "label", "d", "ab12cd=cat", f"{IDS[0]}=cat", "ab12ce=dog") == 0  # the same label twice is fine
    assert fake.called("set_labels") == [("d", {IDS[0]: "cat", IDS[1]: "dog"})]


def test_dataset_images_json_gives_numbers_as_numbers_and_times_as_before(fake, capsys):
    import dataclasses
    import json

    fake.images = [dataclasses.replace(_image(IDS[0]), create_time=datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)),
                   _image(IDS[1])]
    assert run("dataset", "images", "d", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["size_bytes"] == 118 and listed[0]["width"] == 8 and listed[0]["id"] == IDS[0]
    assert listed[0]["create_time"] == "2026-01-02T03:04:05.120Z"  # proto JSON's form, as before it was typed
    assert listed[1]["create_time"] is None


def test_diff_json_gives_counts_as_numbers():
    from trainyard.dataset.v1 import dataset_service_pb2 as ds

    diff = ds.DiffVersionsResponse(added_image_ids=["a"], class_changes=[ds.ClassCountChange(label="cat", base_count=3, target_count=5)])
    assert cli._dict(diff) == {"added_image_ids": ["a"], "class_changes": [{"label": "cat", "base_count": 3, "target_count": 5}]}


# predictions --------------------------------------------------------------------------------
def test_predict_names_each_bad_file_and_predicts_the_others(fake, screen, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in (("a.png", b"good a"), ("b.png", b"broken"), ("c.jpg", b"good c"), ("d.png", b"empty")):
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not an image: never sent")
    fake.bad_images = {b"broken": "the image data is truncated or corrupt", b"empty": "not an image"}
    assert run("models", "predict", "d", "V001", str(folder)) == cli.EXIT_ERROR
    out = screen.getvalue()
    assert "a.png" in out and "c.jpg" in out and "cat (0.900)" in out
    assert "2 files could not be predicted" in out
    assert f"{folder / 'b.png'}: the image data is truncated or corrupt" in out
    assert f"{folder / 'd.png'}: not an image" in out
    assert "images[" not in out
    assert fake.called("predict") == [(4,), (3,), (2,)]  # each refusal takes out one file, the rest go again


def test_predict_batches_fit_a_message_and_a_file_too_large_is_named(fake, screen, tmp_path):
    photos = []
    for i in range(12):  # ordinary photos: 12 of 2.3 MB are over the 16 MiB a request may have
        photos.append(tmp_path / f"p{i:02d}.jpg")
        photos[-1].write_bytes(bytes([i]) * 2_300_000)
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(b"h" * 17_000_000)
    assert run("models", "predict", "d", "V001", str(tmp_path)) == cli.EXIT_ERROR
    out = screen.getvalue()
    assert f"{huge}: too large to send: 17,000,000 bytes; at most 15,728,640" in out, out
    assert "1 file could not be predicted" in out and "ResourceExhausted" not in out
    assert fake.called("predict") == [(6,), (6,)]  # 6 × 2.3 MB fit in 15 MiB, 7 do not
    assert all(p.name in out for p in photos)


def test_predict_of_a_missing_file_is_a_usage_error(fake, screen):
    assert run("models", "predict", "d", "V001", "nosuch.jpg") == cli.EXIT_USAGE
    assert "no such file or folder: nosuch.jpg" in screen.getvalue()
    assert fake.called("predict") == []


def test_predict_json_marks_failed_files(fake, capsys, tmp_path):
    import json

    (tmp_path / "a.png").write_bytes(b"good")
    (tmp_path / "b.png").write_bytes(b"bad")
    fake.bad_images = {b"bad": "not an image"}
    assert run("models", "predict", "d", "V001", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--json") == 1
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["labels"][0] == {"label": "cat", "score": 0.9}
    assert listed[1] == {"file": str(tmp_path / "b.png"), "error": "not an image"}


# output files: checked first, written whole or not at all -------------------------------------
def test_dataset_export_to_a_missing_folder_is_a_usage_error(fake, screen):
    assert run("dataset", "export", "d", "v1", "-o", "/nonexistent/dir/x.jsonl") == cli.EXIT_USAGE
    assert "there is no folder /nonexistent/dir" in screen.getvalue()
    assert fake.calls == []


def test_dataset_export_writes_the_file(fake, screen, tmp_path):
    assert run("dataset", "export", "d", "v1", "-o", str(tmp_path / "m.jsonl")) == 0
    assert (tmp_path / "m.jsonl").read_bytes() == b'{"source": "a"}\n{"source": "b"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_models_export_onto_a_file_is_a_usage_error(fake, screen, tmp_path):
    (tmp_path / "afile").write_text("mine")
    assert run("models", "export", "d", "V001", "-o", str(tmp_path / "afile")) == cli.EXIT_USAGE
    assert "is a file, not a folder" in screen.getvalue()
    assert (tmp_path / "afile").read_text() == "mine" and fake.calls == []


def test_models_export_of_an_unknown_version_leaves_no_folder(fake, screen, tmp_path, monkeypatch):
    monkeypatch.setattr("trainyard.artifacts.ARTIFACTS", ("a.bin", "b.bin", "c.bin"))
    monkeypatch.chdir(tmp_path)
    assert run("models", "export", "d", "V9", "-o", "exp9") == cli.EXIT_ERROR
    assert "has no model version 'V9'" in screen.getvalue()
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_models_export_leaves_nothing_behind(fake, screen, tmp_path, monkeypatch):
    monkeypatch.setattr("trainyard.artifacts.ARTIFACTS", ("a.bin", "b.bin", "c.bin"))
    fake.fail_download_at = ("b.bin", KeyboardInterrupt())
    assert run("models", "export", "d", "V001", "-o", str(tmp_path / "deep" / "out")) == cli.EXIT_INTERRUPTED
    assert "interrupted" in screen.getvalue()
    assert list(tmp_path.iterdir()) == []


def test_models_export_into_an_existing_folder_replaces_its_files(fake, screen, tmp_path, monkeypatch):
    monkeypatch.setattr("trainyard.artifacts.ARTIFACTS", ("a.bin", "b.bin", "c.bin"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin").write_bytes(b"old")
    (out / "keep.txt").write_text("mine")
    assert run("models", "export", "d", "V001", "-o", str(out)) == 0
    assert (out / "a.bin").read_bytes() == fake.artifacts["a.bin"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _one_file_system(mount: Path):
    """os.replace as if `mount` were a mount point: a rename into or out of it fails."""
    real = os.replace

    def replace(src, dst):
        if (mount in Path(src).parents) != (mount == Path(dst) or mount in Path(dst).parents):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src), None, str(dst))
        real(src, dst)

    return replace


def test_models_export_into_a_folder_that_is_a_mount_point(fake, screen, tmp_path, monkeypatch):
    monkeypatch.setattr("trainyard.artifacts.ARTIFACTS", ("a.bin", "b.bin", "c.bin"))
    out = tmp_path / "mnt"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    monkeypatch.setattr(os, "replace", _one_file_system(out))
    assert run("models", "export", "d", "V001", "-o", str(out)) == 0, screen.getvalue()
    assert sorted(p.name for p in out.iterdir()) == ["a.bin", "b.bin", "c.bin", "keep.txt"]
    assert (out / "c.bin").read_bytes() == fake.artifacts["c.bin"] and sorted(p.name for p in tmp_path.iterdir()) == ["mnt"]
    fake.fail_download_at = ("b.bin", KeyboardInterrupt())  # interrupted: the folder is left as it was
    fake.artifacts["a.bin"] = b"new"
    assert run("models", "export", "d", "V001", "-o", str(out)) == cli.EXIT_INTERRUPTED
    assert sorted(p.name for p in out.iterdir()) == ["a.bin", "b.bin", "c.bin", "keep.txt"]
    assert (out / "a.bin").read_bytes() != b"new"


def test_models_report_is_named_after_what_was_typed(fake, screen, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fake, "get_model_version", lambda dataset, version: SimpleNamespace(version=version, dataset_id="ds-1"),
                        raising=False)
    fake.artifacts.update({"metrics.json": b'{"evaluation": {"classes": []}}', "confusion_matrix.png": b"p", "curves.png": b"c"})
    monkeypatch.setattr(display, "summary_rows", lambda mv: [("accuracy", "1.0")])
    assert run("models", "report", "digits", "V001") == 0
    assert [p.name for p in tmp_path.iterdir()] == ["digits-V001.html"]


# errors: once, readable, with the documented exit code -----------------------------------
def test_a_refused_start_lists_each_rule_once(fake, screen, monkeypatch):
    rules = ["class 'a' has 1 labeled image; at least 5 are needed", "only 1 class; at least 2 are needed"]

    def refuse(*args, **kwargs):
        raise FailedPrecondition("training cannot start: " + "; ".join(rules), rules)

    monkeypatch.setattr(fake, "publish_version", refuse, raising=False)
    assert run("dataset", "publish", "d") == cli.EXIT_ERROR
    out = screen.getvalue()
    assert "refused: training cannot start:" in out
    assert all(out.count(rule) == 1 for rule in rules), out


def test_ctrl_c_outside_job_following_exits_130(fake, screen, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fake, "list_datasets", interrupted, raising=False)
    assert run("dataset", "list") == cli.EXIT_INTERRUPTED
    assert "interrupted" in screen.getvalue()


def test_a_local_file_error_is_a_message(fake, screen, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/root/x")

    monkeypatch.setattr(fake, "list_datasets", denied, raising=False)
    assert run("dataset", "list") == cli.EXIT_ERROR
    assert "error: /root/x: Permission denied" in screen.getvalue()


# imports: the source is checked before a dataset is created ---------------------------------------
def test_import_of_something_that_is_no_source_creates_nothing(fake, screen, tmp_path):
    (tmp_path / "gen.py").write_text("print(1)")
    assert run("dataset", "import", str(tmp_path / "gen.py"), "--dataset", "x3") == cli.EXIT_USAGE
    assert "give a folder, a .zip or a manifest" in screen.getvalue()
    assert fake.calls == []


def test_import_of_a_folder_without_images_creates_nothing(fake, screen, tmp_path):
    (tmp_path / "empty").mkdir()
    assert run("dataset", "import", str(tmp_path / "empty"), "--dataset", "x2") == cli.EXIT_USAGE
    assert "no image files; nothing was imported" in screen.getvalue()
    (tmp_path / "docs" / "a").mkdir(parents=True)
    for name in ("a/x.txt", "a/y.txt", "z.py"):
        (tmp_path / "docs" / name).write_text("text")
    assert run("dataset", "import", str(tmp_path / "docs"), "--dataset", "x2") == cli.EXIT_USAGE
    assert "3 files that are not images (.txt ×2, .py ×1)" in screen.getvalue()
    assert fake.calls == []


def test_import_of_a_malformed_manifest_names_the_line_and_creates_nothing(fake, screen, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"source": "a.png"}\n{"source": "b.png", oops}\n')
    assert run("dataset", "import", str(manifest), "--dataset", "x") == cli.EXIT_USAGE
    assert f"{manifest}, line 2: not valid JSON" in screen.getvalue()
    assert fake.calls == []


def test_import_summary_counts_skipped_files_and_relabeled_duplicates(fake, screen, tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(b"a")
    (tmp_path / "cat" / "notes.txt").write_text("x")
    fake.dataset_images = 3
    fake.images = [_image("1" * 64, "dog"), _image("2" * 64, "cat")]
    fake.upload_results = [types.UploadResult("cat/a.png", "duplicate", "1" * 64, "", "cat"),  # was dog: relabeled
                           types.UploadResult("cat/b.png", "duplicate", "2" * 64, "", "cat"),  # same label
                           types.UploadResult("cat/c.png", "stored", "3" * 64, "", "cat"),
                           types.UploadResult("cat/d.png", "rejected", "", "no such file", "cat")]
    assert run("dataset", "import", str(tmp_path), "--dataset", "pets") == cli.EXIT_ERROR  # a file was rejected
    out = screen.getvalue()
    assert "1 stored, 2 duplicates, 1 rejected" in out
    assert "1 duplicate relabeled: the label from the folder name replaced the one it had" in out
    assert "skipped 1 file that is not an image (.txt ×1)" in out
    assert "rejected cat/d.png: no such file" in out
    assert fake.called("create_dataset") == []


def test_an_import_with_a_rejected_file_exits_1(fake, screen, tmp_path):
    (tmp_path / "a.png").write_bytes(b"a")
    fake.upload_results = [types.UploadResult("a.png", "rejected", "", "not an image", "")]
    assert run("dataset", "import", str(tmp_path), "--dataset", "pets") == cli.EXIT_ERROR
    assert "0 stored, 0 duplicates, 1 rejected" in screen.getvalue()
    fake.upload_results = [types.UploadResult("a.png", "stored", "1" * 64, "", "")]
    assert run("dataset", "import", str(tmp_path), "--dataset", "pets") == cli.EXIT_OK


@pytest.mark.parametrize(("error", "code", "first"), [
    (KeyboardInterrupt(), cli.EXIT_INTERRUPTED, "interrupted: "),
    (Unavailable("the dataset service is unavailable"), cli.EXIT_ERROR, "Unavailable: the dataset service is unavailable\n"),
])
def test_an_import_that_ends_early_says_what_the_dataset_kept(error, code, first, fake, screen, tmp_path):
    (tmp_path / "a.png").write_bytes(b"a")
    fake.dataset_images = 3
    fake.upload_results = [types.UploadResult("a.png", "stored", "1" * 64, "", "")]
    fake.upload_failure = (9, error)  # the server stored the batch in flight too
    assert run("dataset", "import", str(tmp_path), "--dataset", "pets") == code
    out = screen.getvalue()
    assert (f"{first}the dataset has 9 images now, 6 more than before this import: they are kept, "
            "and importing again reports them as duplicates") in out, out


def test_an_import_that_ends_early_says_what_it_knows_when_the_service_is_gone(fake, screen, tmp_path):
    (tmp_path / "a.png").write_bytes(b"a")
    fake.dataset_images = 3
    fake.upload_results = [types.UploadResult("a.png", "stored", "1" * 64, "", "")]
    fake.upload_failure = (Unavailable("down"), Unavailable("the dataset service is unavailable"))
    assert run("dataset", "import", str(tmp_path), "--dataset", "pets") == cli.EXIT_ERROR
    assert ("1 file stored before, and kept (the batch being sent may have been stored too); importing again "
            "reports them as duplicates") in screen.getvalue()


@pytest.mark.parametrize(("text", "problem"), [("{oops", "is not valid JSON"), ("[]", "holds a JSON list, not an object"),
                                               ('{"dataset": 5}', "'dataset' is a JSON int, not a string")])
def test_a_bad_stack_file_is_a_message_naming_it(text, problem, screen, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINYARD_DATA_DIR", str(tmp_path))
    for name in ("TRAINYARD_DATASET_ADDRESS", "TRAINYARD_SCHEDULER_ADDRESS", "TRAINYARD_API_KEY", "TRAINYARD_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "stack.json").write_text(text)
    assert run("dataset", "list") == cli.EXIT_ERROR
    out = screen.getvalue()
    assert f"error: {tmp_path / 'stack.json'}" in out and problem in out and "Traceback" not in out, out
