"""The CLI against the whole local stack where users go wrong: bad sources, missing files,
re-imports over label edits, shortened image ids, refusals, output paths. No training."""

from __future__ import annotations

import json

import pytest

from trainyard.cli.main import main
from trainyard.sample_data import write_digits

pytestmark = pytest.mark.e2e


@pytest.fixture
def cli(stack, capsys):
    connect = ["--dataset-address", stack.address("dataset"), "--scheduler-address", stack.address("scheduler"),
               "--api-key", stack.api_key]

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main([*connect, *args])
        out = capsys.readouterr()
        return code, out.out + out.err

    return run


def _names(client) -> set[str]:
    return {d.display_name for d in client.list_datasets()}


def test_a_bad_source_creates_no_dataset(cli, client, tmp_path):
    (tmp_path / "gen.py").write_text("print(1)")
    (tmp_path / "empty").mkdir()
    code, out = cli("dataset", "import", str(tmp_path / "gen.py"), "--dataset", "cli-err-x3")
    assert code == 2 and "give a folder, a .zip or a manifest" in out
    code, out = cli("dataset", "import", str(tmp_path / "empty"), "--dataset", "cli-err-x2")
    assert code == 2 and "no image files; nothing was imported" in out
    assert not {"cli-err-x2", "cli-err-x3"} & _names(client)


def test_a_manifest_with_a_missing_file_stores_the_others(cli, client, tmp_path):
    write_digits(tmp_path / "d", per_class=1)
    files = sorted((tmp_path / "d").rglob("*.png"))[:3]
    records = [{"source": str(p.relative_to(tmp_path)), "annotation": [{"name": p.parent.name}]} for p in files]
    records.insert(1, {"source": "d/gone.png", "annotation": [{"name": "9"}]})
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(records, indent=2))  # a pretty-printed JSON array
    code, out = cli("dataset", "import", str(manifest), "--dataset", "cli-err-manifest")
    assert code == 1, out  # a file was rejected
    assert "3 stored, 0 duplicates, 1 rejected" in out and "rejected d/gone.png: no such file" in out
    assert client.get_dataset("cli-err-manifest").image_count == 3


def test_reimport_says_which_labels_the_files_changed_and_image_ids_round_trip(cli, client, tmp_path):
    folder = tmp_path / "digits"
    write_digits(folder, per_class=2)
    (folder / "notes.txt").write_text("not an image")
    code, out = cli("dataset", "import", str(folder), "--dataset", "cli-err-relabel")
    assert code == 0 and "20 stored" in out and "skipped 1 file that is not an image (.txt ×1)" in out, out
    code, out = cli("dataset", "images", "cli-err-relabel", "--label", "3")
    shown = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert len(shown) == 2 and all(len(i) == 12 for i in shown), out
    code, out = cli("dataset", "label", "cli-err-relabel", f"{shown[0]}=8")
    assert code == 0 and "1 label(s) changed" in out, out
    listed = json.loads(cli("dataset", "images", "cli-err-relabel", "--label", "8", "--json")[1])
    assert any(i["id"].startswith(shown[0]) for i in listed)
    assert all(isinstance(i["size_bytes"], int) and len(i["id"]) == 64 for i in listed)
    code, out = cli("dataset", "import", str(folder), "--dataset", "cli-err-relabel")
    assert code == 0 and "0 stored, 20 duplicates, 0 rejected; 1 duplicate relabeled" in out, out
    assert {i.label for i in client.list_images("cli-err-relabel") if i.id.startswith(shown[0])} == {"3"}


def test_a_refused_publish_lists_each_rule_once(cli, client, tmp_path):
    write_digits(tmp_path / "few", per_class=1)
    assert cli("dataset", "import", str(tmp_path / "few"), "--dataset", "cli-err-few")[0] == 0
    code, out = cli("dataset", "publish", "cli-err-few")
    assert code == 1
    rules = client.check_trainability("cli-err-few").violations
    assert len(rules) >= 2 and all(out.count(rule) == 1 for rule in rules), out


def test_outputs_are_checked_first_and_never_left_half_written(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_digits(tmp_path / "six", per_class=6)
    assert cli("dataset", "import", str(tmp_path / "six"), "--dataset", "cli-err-out")[0] == 0
    assert cli("dataset", "publish", "cli-err-out", "--name", "v1")[0] == 0
    code, out = cli("dataset", "export", "cli-err-out", "v1", "-o", "/nonexistent/dir/x.jsonl")
    assert code == 2 and "there is no folder /nonexistent/dir" in out
    (tmp_path / "afile").write_text("mine")
    code, out = cli("models", "export", "cli-err-out", "V001", "-o", "afile")
    assert code == 2 and (tmp_path / "afile").read_text() == "mine"
    code, out = cli("models", "export", "cli-err-out", "V9", "-o", "exp9")
    assert code == 1 and "V9" in out
    assert not (tmp_path / "exp9").exists() and not list(tmp_path.glob(".exp9*"))
    code, out = cli("dataset", "export", "cli-err-out", "v1", "-o", "m.jsonl")
    assert code == 0 and len((tmp_path / "m.jsonl").read_text().splitlines()) == 60
