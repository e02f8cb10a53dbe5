"""The whole local stack (S3 server + three service processes) driven through the SDK and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainyard.errors import FailedPrecondition, InvalidArgument
from trainyard.sample_data import digit_files, write_digits

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def digits(client):
    ds = client.create_dataset("digits-e2e")
    response = client.upload_images(ds.id, digit_files(per_class=15))
    assert response.stored == 150
    return ds


def test_upload_train_watch_metrics(client, digits):
    job = client.create_training_job(digits.id, accept_free_terms=True, max_epochs=2, preference="performance_first")
    assert (job.state, job.queue_position) == ("queued", 1)
    events = list(client.watch(job.id))
    kinds = [e.kind for e in events]
    assert "progress" in kinds and "result" in kinds
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].final
    done = client.get_job(job.id)
    assert done.state == "completed", done.error_message
    assert done.final and done.stop_reason == "converged"
    mv = client.get_model_version(digits.id, done.model_version)
    assert mv.version == done.model_version and mv.version.startswith("V")
    ev = mv.evaluation
    assert ev.validation_samples == 30
    assert 0.0 <= ev.accuracy <= 1.0 and len(ev.classes) == 10
    assert sum(c.support for c in ev.classes) == 30
    assert sum(map(sum, ev.confusion_matrix)) == 30
    assert events[-2].kind == "result" and events[-2].model_version.version == mv.version
    assert mv.artifact_prefix
    # the model serves predictions right away
    predictions = client.predict(digits.id, mv.version, [digit_files(per_class=1)[3][2]], top_k=3)
    assert len(predictions) == 1 and len(predictions[0]) == 3


def test_job_refusals_are_clear(client, digits):
    with pytest.raises(InvalidArgument) as exc:
        client.create_training_job(digits.id, accept_free_terms=True, max_duration_minutes=5)
    assert exc.value.violations[0].field == "max_duration_minutes"
    with pytest.raises(FailedPrecondition):
        client.create_training_job(digits.id)  # free flavor without agreeing to its terms
    small = client.create_dataset("too-small")
    client.upload_images(small.id, digit_files(per_class=3)[:3])
    with pytest.raises(FailedPrecondition) as exc:
        client.create_training_job(small.id, accept_free_terms=True)
    assert len(exc.value.violations) >= 2  # every failing S1 rule, not only the first


def test_cli_import_train_and_show(stack, tmp_path):
    folder = tmp_path / "digits"
    write_digits(folder, per_class=8)
    env = {**os.environ, "TRAINYARD_DATASET_ADDRESS": stack.address("dataset"),
           "TRAINYARD_SCHEDULER_ADDRESS": stack.address("scheduler"), "TRAINYARD_API_KEY": stack.api_key, "COLUMNS": "160"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trainyard.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=300)

    imported = cli("dataset", "import", str(folder), "--dataset", "cli-digits")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "80 stored" in imported.stdout
    trained = cli("train", "--dataset", "cli-digits", "--accept-free-terms", "--max-epochs", "1",
                  "--preference", "performance_first")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "Classification statistics" in trained.stdout
    shown = cli("models", "show", "cli-digits", "V001")
    assert shown.returncode == 0 and "Confusion matrix" in shown.stdout
    report = tmp_path / "report.html"
    assert cli("models", "report", "cli-digits", "V001", "-o", str(report)).returncode == 0
    assert "Classification statistics" in report.read_text() and "data:image/png;base64," in report.read_text()
    predicted = cli("models", "predict", "cli-digits", "V001", str(folder / "3"), "--json")
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    import json
    assert len(json.loads(predicted.stdout)) == 8
    exported = cli("models", "export", "cli-digits", "V001", "-o", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    import torch
    scripted = torch.jit.load(str(tmp_path / "export" / "model.torchscript.pt"))
    assert scripted is not None
    bad = cli("train", "--dataset", "cli-digits", "--accept-free-terms", "--ratio", "0.123456")
    assert bad.returncode == 1 and "train_ratio" in bad.stdout


def test_cli_dataset_commands(stack, tmp_path):
    import json
    import zipfile

    env = {**os.environ, "TRAINYARD_DATASET_ADDRESS": stack.address("dataset"),
           "TRAINYARD_SCHEDULER_ADDRESS": stack.address("scheduler"), "TRAINYARD_API_KEY": stack.api_key, "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "trainyard.cli.main", *args], env=env,
                                capture_output=True, text=True, timeout=300)
        return result

    archive = tmp_path / "digits.zip"
    files = digit_files(per_class=6)
    with zipfile.ZipFile(archive, "w") as z:
        for name, _, data in files:
            z.writestr(name, data)
    assert "60 stored" in cli("dataset", "import", str(archive), "--dataset", "zipped").stdout
    manifest = tmp_path / "more" / "manifest.jsonl"
    manifest.parent.mkdir()
    extra = digit_files(per_class=7)
    lines = []
    for name, label, data in extra:
        (manifest.parent / name.replace("/", "-")).write_bytes(data)
        lines.append(json.dumps({"source": name.replace("/", "-"), "annotation": [{"name": label, "type": "modelarts/image_classification"}]}))
    manifest.write_text("\n".join(lines))
    assert "10 stored, 60 duplicates" in cli("dataset", "import", str(manifest), "--dataset", "zipped").stdout
    stats = json.loads(cli("dataset", "stats", "zipped", "--json").stdout)
    assert sum(stats["classes"].values()) == 70
    assert cli("dataset", "publish", "zipped", "--name", "a").returncode == 0
    image = json.loads(cli("dataset", "images", "zipped", "--label", "3", "--json").stdout)[0]["id"]
    assert "1 label(s) changed" in cli("dataset", "label", "zipped", f"{image}=8").stdout
    assert cli("dataset", "publish", "zipped", "--name", "b").returncode == 0
    diff = json.loads(cli("dataset", "diff", "zipped", "a", "b", "--json").stdout)
    assert [r["image_id"] for r in diff["relabeled"]] == [image]
    exported = cli("dataset", "export", "zipped", "b").stdout.splitlines()
    assert len(exported) == 70 and all(json.loads(line)["usage"] in ("TRAIN", "EVAL") for line in exported)
    check = cli("dataset", "check", "zipped")
    assert check.returncode == 0 and "ready to train" in check.stdout


def test_sdk_quickstart_example_runs(stack, tmp_path):
    write_digits(tmp_path / "digits", per_class=6)
    env = {**os.environ, "TRAINYARD_DATASET_ADDRESS": stack.address("dataset"),
           "TRAINYARD_SCHEDULER_ADDRESS": stack.address("scheduler"), "TRAINYARD_API_KEY": stack.api_key}
    result = subprocess.run([sys.executable, "-m", "trainyard.sdk.examples.quickstart", str(tmp_path / "digits"),
                             "--dataset", "quickstart", "--max-epochs", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uploaded 60 images" in result.stdout and "model version V" in result.stdout
