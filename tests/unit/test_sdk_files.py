"""The SDK's local files: manifests (JSON Lines or a JSON array), and uploads in which a file
that cannot be read is rejected by itself instead of failing the stream."""

from __future__ import annotations

import json
import lzma
import zipfile

import pytest

from trainyard.errors import InvalidArgument
from trainyard.sdk import Client, Connection, ConnectionSettingsError, types
from trainyard.sdk.client import ManifestError, image_files, read_manifest


@pytest.fixture
def client(monkeypatch) -> Client:
    """A client whose upload stream is read here: each file sent is stored (or a duplicate when seen before)."""
    client = Client("127.0.0.1:9", "127.0.0.1:9", api_key="tyk_test", tls=None)
    client.sent = []
    seen = set()

    def upload_images(dataset, files, *, timeout=None):
        results = []
        for name, label, data in files:  # consumes the generator as gRPC would
            client.sent.append((name, label, data))
            results.append(types.UploadResult(name, "duplicate" if data in seen else "stored", data.hex(), ""))
            seen.add(data)
        return types.UploadSummary(results, sum(r.status == "stored" for r in results),
                                   sum(r.status == "duplicate" for r in results), 0)

    monkeypatch.setattr(client, "upload_images", upload_images)
    return client


def _records(*sources):
    return [{"source": s, "annotation": [{"name": f"label-{s[0]}", "type": "modelarts/image_classification"}]} for s in sources]


def test_a_manifest_is_json_lines_or_one_json_array(tmp_path):
    lines = tmp_path / "m.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in _records("a.png", "b.png")) + "\n\n")
    array = tmp_path / "m.json"
    array.write_text(json.dumps(_records("a.png", "b.png"), indent=2))
    assert read_manifest(lines) == read_manifest(array) == _records("a.png", "b.png")


@pytest.mark.parametrize(("text", "line", "words"), [
    ('{"source": "a.png"}\n{"source": "b.png", oops}\n', 2, "not valid JSON"),
    ('{"source": "a.png"}\n["b.png"]\n', 2, "is list, not an object"),
    ('{"source": "a.png"}\n{"annotation": []}\n', 2, "has no source"),
    ('[\n  {"source": "a.png"},\n  {"source": "b.png",}\n]', 3, "not valid JSON"),
    ('[{"source": "a.png"}, 7]', None, "item 2 of the array is int"),
])
def test_a_malformed_manifest_names_its_first_bad_line(tmp_path, text, line, words):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(ManifestError) as exc:
        read_manifest(path)
    assert isinstance(exc.value, InvalidArgument) and exc.value.line == line
    assert words in exc.value.message and str(path) in exc.value.message


def test_a_missing_file_of_a_manifest_is_rejected_by_name_and_the_others_go_on(client, tmp_path):
    (tmp_path / "a.png").write_bytes(b"A")
    (tmp_path / "c.png").write_bytes(b"C")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in _records("a.png", "missing.png", "c.png")))
    (summary,) = client.import_manifest("ds", manifest)
    assert [(r.file_name, r.status, r.label) for r in summary.results] == [
        ("a.png", "stored", "label-a"), ("missing.png", "rejected", "label-m"), ("c.png", "stored", "label-c")]
    assert summary.results[1].reason == "no such file"
    assert (summary.stored, summary.rejected) == (2, 1)
    assert [name for name, _, _ in client.sent] == ["a.png", "c.png"]


def test_an_unreadable_file_of_a_folder_is_rejected_by_itself(client, tmp_path):
    for name in ("cat/a.png", "cat/b.png", "dog/c.jpg", "dog/notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "cat" / "b.png").chmod(0)
    readable = (tmp_path / "cat" / "b.png").exists() and _can_read(tmp_path / "cat" / "b.png")
    images, others = image_files(tmp_path)
    assert [p.name for p in images] == ["a.png", "b.png", "c.jpg"] and [p.name for p in others] == ["notes.txt"]
    seen = []
    summaries = client.upload_folder("ds", tmp_path, batch=2, on_batch=lambda s, done, total: seen.append((done, total)))
    assert seen == [(2, 3), (3, 3)]
    results = [r for s in summaries for r in s.results]
    assert [(r.file_name, r.label) for r in results] == [("cat/a.png", "cat"), ("cat/b.png", "cat"), ("dog/c.jpg", "dog")]
    if not readable:  # root reads any file
        assert results[1].status == "rejected" and "cannot read the file" in results[1].reason


def _can_read(path) -> bool:
    try:
        path.read_bytes()
    except OSError:
        return False
    return True


def test_a_file_removed_between_listing_and_upload_is_rejected_by_itself(client, tmp_path, monkeypatch):
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(name.encode())
    listed = image_files(tmp_path)
    monkeypatch.setattr("trainyard.sdk.client.image_files", lambda folder: listed)
    (tmp_path / "b.png").unlink()
    (summary,) = client.upload_folder("ds", tmp_path)
    assert [(r.file_name, r.status, r.reason) for r in summary.results] == [
        ("a.png", "stored", ""), ("b.png", "rejected", "no such file"), ("c.png", "stored", "")]


def test_a_zip_uploads_its_images_with_the_label_of_their_folder(client, tmp_path):
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("cat/a.png", b"A")
        z.writestr("top.png", b"T")
        z.writestr("cat/readme.txt", b"R")
    (summary,) = client.upload_zip("ds", archive)
    assert [(r.file_name, r.label) for r in summary.results] == [("cat/a.png", "cat"), ("top.png", "")]


def test_a_json_array_manifest_with_bucket_sources_is_sent_in_batches_of_lines(client, tmp_path, monkeypatch):
    from trainyard.dataset.v1 import dataset_pb2
    from trainyard.dataset.v1 import dataset_service_pb2 as ds

    sent = []

    def call(method, request, timeout, **kwargs):
        lines = [json.loads(line) for line in request.manifest_content.decode().splitlines()]
        sent.append(len(lines))
        return ds.ImportManifestResponse(results=[dataset_pb2.UploadResult(file_name=r["source"], status=1) for r in lines],
                                         stored_count=len(lines))

    monkeypatch.setattr(client, "_call", call)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(_records(*(f"s3://bucket/imports/t/{i}.png" for i in range(7))), indent=2))
    summaries = client.import_manifest("ds", manifest, batch=3)
    assert sent == [3, 3, 1]
    assert [r.label for s in summaries for r in s.results] == ["label-s"] * 7


def test_a_zip_entry_with_corrupt_data_is_rejected_by_itself(client, tmp_path):
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("cat/a.png", "cat/b.png", "cat/c.png"):
            z.writestr(name, name.encode() * 100)
    with zipfile.ZipFile(archive) as z:
        entry = z.getinfo("cat/b.png")
    data = bytearray(archive.read_bytes())
    start = entry.header_offset + 30 + len(entry.filename.encode()) + len(entry.extra)
    data[start:start + 8] = b"\xff" * 8  # not deflate data: reading it raises zlib.error
    archive.write_bytes(bytes(data))
    (summary,) = client.upload_zip("ds", archive)
    assert [(r.file_name, r.status) for r in summary.results] == [
        ("cat/a.png", "stored"), ("cat/b.png", "rejected"), ("cat/c.png", "stored")]
    assert summary.results[1].reason.startswith("cannot read the file: Error -3 while decompressing data")
    assert summary.rejected == 1


@pytest.mark.parametrize("error", [EOFError("Compressed file ended before the end-of-stream marker was reached"),
                                   lzma.LZMAError("Corrupt input data"), KeyError("no such entry")])
def test_any_error_reading_a_file_rejects_that_file_alone(client, error):
    def broken():
        raise error

    summary = client.upload_files("ds", [("a.png", "", lambda: b"A"), ("b.png", "", broken), ("c.png", "", lambda: b"C")])
    assert [r.status for r in summary.results] == ["stored", "rejected", "stored"]
    assert summary.results[1].reason.startswith("cannot read the file: ")


@pytest.mark.parametrize(("text", "problem"), [
    ("{oops", "is not valid JSON"), ("", "is not valid JSON"), ("[]", "holds a JSON list, not an object"),
    (b"\xff\xfe", "is not valid JSON"), ('{"scheduler": ["a"]}', "'scheduler' is a JSON list, not a string"),
])
def test_a_bad_stack_file_raises_an_error_naming_it(tmp_path, monkeypatch, text, problem):
    monkeypatch.setenv("TRAINYARD_DATA_DIR", str(tmp_path))
    stack_file = tmp_path / "stack.json"
    stack_file.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConnectionSettingsError) as exc:
        Connection.from_env()
    assert str(stack_file) in str(exc.value) and problem in str(exc.value)


def test_a_good_stack_file_gives_the_connection(tmp_path, monkeypatch):
    for name in ("TRAINYARD_DATASET_ADDRESS", "TRAINYARD_SCHEDULER_ADDRESS", "TRAINYARD_API_KEY", "TRAINYARD_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRAINYARD_DATA_DIR", str(tmp_path))
    (tmp_path / "key").write_text("tyk_x\n")
    (tmp_path / "stack.json").write_text(json.dumps({"dataset": "127.0.0.1:1", "scheduler": "127.0.0.1:2",
                                                     "api_key_file": str(tmp_path / "key"), "pid": 7}))
    assert Connection.from_env() == Connection("127.0.0.1:1", "127.0.0.1:2", "tyk_x", None)
