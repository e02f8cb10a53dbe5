"""The dataset service through its gRPC API, against a real S3 server."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from minio import Minio
from PIL import Image

from tests.integration.dataset_calls import new_dataset, upload
from trainyard.dataset.v1 import dataset_pb2
from trainyard.dataset.v1 import dataset_service_pb2 as api
from trainyard.dataset.v1 import dataset_service_pb2_grpc as api_grpc
from trainyard.sample_data import digit_files
from trainyard.services.dataset.server import DatasetConfig, build
from trainyard.services.dataset.service import Limits


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_config, security):
    config = DatasetConfig("127.0.0.1:0", tmp_path_factory.mktemp("dataset"), s3_config, Limits(), security.config)
    running, service = build(config)
    running.service = service
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def stub(server, security):
    return api_grpc.DatasetServiceStub(security.channel(f"127.0.0.1:{server.port}"))


def png(color=(255, 0, 0), size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_create_get_list(stub):
    ds = new_dataset(stub)
    assert ds.id.startswith("ds-")
    assert stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.id)).dataset.display_name == ds.display_name
    assert stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.display_name)).dataset.id == ds.id
    assert ds.id in [d.id for d in stub.ListDatasets(api.ListDatasetsRequest(page_size=1000)).datasets]


def test_duplicate_name_and_bad_name(stub):
    ds = new_dataset(stub)
    with pytest.raises(grpc.RpcError) as exc:
        stub.CreateDataset(api.CreateDatasetRequest(display_name=ds.display_name))
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as exc:
        stub.CreateDataset(api.CreateDatasetRequest(display_name="bad name!"))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "display_name" in exc.value.details()


def test_unknown_dataset_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetDataset(api.GetDatasetRequest(dataset_id="ds-nope"))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def test_upload_stores_by_sha256_and_rejects_bad_files_without_aborting(stub, objects):
    ds = new_dataset(stub)
    good = png()
    response = upload(stub, ds.id, [
        ("a.png", "red", good),
        ("junk.png", "red", b"definitely not an image"),
        ("again.png", "red", good),
        ("b.png", "", png((0, 255, 0))),
    ])
    statuses = [r.status for r in response.results]
    assert statuses == [dataset_pb2.UPLOAD_STATUS_STORED, dataset_pb2.UPLOAD_STATUS_REJECTED,
                        dataset_pb2.UPLOAD_STATUS_DUPLICATE, dataset_pb2.UPLOAD_STATUS_STORED]
    assert response.results[1].reason
    image_id = hashlib.sha256(good).hexdigest()
    assert response.results[0].image_id == image_id
    assert objects.get_bytes(f"datasets/{ds.id}/images/{image_id[:2]}/{image_id}") == good
    got = stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.id)).dataset
    assert (got.image_count, got.labeled_image_count) == (2, 1)
    unlabeled = stub.ListImages(api.ListImagesRequest(dataset_id=ds.id, unlabeled_only=True)).images
    assert [i.file_name for i in unlabeled] == ["b.png"]


def test_upload_of_20_mib_larger_than_grpc_message_limit(stub, objects):
    ds = new_dataset(stub)
    side = 2650  # rows of 2650 × 3 = 7950 bytes, padded to 7952: 2650 × 7952 + 54 bytes ≈ 20.1 MiB as BMP
    big = Image.frombytes("RGB", (side, side), bytes(range(256)) * (side * side * 3 // 256) + bytes(side * side * 3 % 256))
    buffer = io.BytesIO()
    big.save(buffer, format="BMP")
    data = buffer.getvalue()
    assert len(data) > 20 * 2**20
    response = upload(stub, ds.id, [("big.bmp", "x", data)], chunk=1 << 20)
    assert response.stored_count == 1, response.results
    image_id = hashlib.sha256(data).hexdigest()
    assert objects.get_bytes(f"datasets/{ds.id}/images/{image_id[:2]}/{image_id}") == data


def test_upload_cut_off_midway_stores_no_partial_file(stub):
    ds = new_dataset(stub)
    files = digit_files(per_class=1)

    def requests():
        yield api.UploadImagesRequest(dataset_id=ds.id)
        for name, label, data in files[:5]:
            yield api.UploadImagesRequest(header=api.ImageHeader(file_name=name, label=label))
            yield api.UploadImagesRequest(chunk=data)
        yield api.UploadImagesRequest(header=api.ImageHeader(file_name="cut.png", label="x"))
        yield api.UploadImagesRequest(chunk=files[5][2][:20])
        raise ConnectionError("client went away")

    with pytest.raises(grpc.RpcError) as exc:
        stub.UploadImages(requests())
    assert exc.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
    import time
    time.sleep(0.5)
    # The cut file is never stored. Usually nothing is recorded; gRPC may report the cancel as an
    # ordinary end of stream, and then only the files that arrived whole are (a retry dedupes them).
    stored = stub.ListImages(api.ListImagesRequest(dataset_id=ds.id)).images
    assert len(stored) in (0, 5)
    assert "cut.png" not in {i.file_name for i in stored}
    retry = upload(stub, ds.id, files[:5])
    assert retry.stored_count + retry.duplicate_count == 5 and retry.duplicate_count == len(stored)


def test_concurrent_publishes_never_mix(stub, digits_dataset, objects):
    from concurrent.futures import ThreadPoolExecutor

    from trainyard.services.dataset.manifest import content_hash

    def publish(i):
        try:
            return stub.PublishVersion(api.PublishVersionRequest(dataset_id=digits_dataset.id, version_name="race", seed=i)).version
        except grpc.RpcError as exc:
            return exc.code()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(publish, range(8)))
    winners = [r for r in results if isinstance(r, dataset_pb2.DatasetVersion)]
    assert len(winners) == 1
    assert all(r == grpc.StatusCode.ALREADY_EXISTS for r in results if r not in winners)
    stored = objects.get_bytes(winners[0].manifest_key)
    assert content_hash(stored) == winners[0].content_hash  # the manifest is the winner's, whole
    with ThreadPoolExecutor(8) as pool:  # proposed names: eight distinct versions
        names = list(pool.map(lambda i: stub.PublishVersion(api.PublishVersionRequest(dataset_id=digits_dataset.id)).version.name, range(8)))
    assert len(set(names)) == 8


def test_export_manifest_streams_the_stored_bytes(stub, digits_dataset, objects):
    v = stub.PublishVersion(api.PublishVersionRequest(dataset_id=digits_dataset.id)).version
    exported = b"".join(r.chunk for r in stub.ExportManifest(api.ExportManifestRequest(dataset_id=digits_dataset.id, version_name=v.name)))
    assert exported == objects.get_bytes(v.manifest_key)
    with pytest.raises(grpc.RpcError) as exc:
        list(stub.ExportManifest(api.ExportManifestRequest(dataset_id=digits_dataset.id, version_name="nope")))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def test_upload_stream_must_start_with_dataset_and_header(stub):
    with pytest.raises(grpc.RpcError) as exc:
        stub.UploadImages(iter([api.UploadImagesRequest(chunk=b"x")]))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dataset_id" in exc.value.details()
    ds = new_dataset(stub)
    with pytest.raises(grpc.RpcError) as exc:
        stub.UploadImages(iter([api.UploadImagesRequest(dataset_id=ds.id, chunk=b"x")]))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header" in exc.value.details()


def test_s1_report_lists_every_failing_rule(stub):
    ds = new_dataset(stub)
    upload(stub, ds.id, [(f"{i}.png", "cat", png((i, 0, 0))) for i in range(3)])
    report = stub.CheckTrainability(api.CheckTrainabilityRequest(dataset_id=ds.id)).report
    assert not report.trainable
    messages = [v.message for v in report.violations]
    assert any("1 class" in m and "at least 2" in m for m in messages), messages
    assert any("'cat' has 3" in m and "at least 5" in m for m in messages), messages
    with pytest.raises(grpc.RpcError) as exc:
        stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(exc.value)
    failure = error_details_pb2.PreconditionFailure()
    assert status.details[0].Unpack(failure)
    assert len(failure.violations) == 2


@pytest.fixture(scope="module")
def digits_dataset(stub):
    ds = new_dataset(stub)
    response = upload(stub, ds.id, digit_files(per_class=20))
    assert response.stored_count == 200
    return ds


@pytest.mark.parametrize("ratio", ["1", "0", "0.123456", "abc", "-0.5", "1.5"])
def test_publish_rejects_bad_ratio_naming_the_field(stub, digits_dataset, ratio):
    with pytest.raises(grpc.RpcError) as exc:
        stub.PublishVersion(api.PublishVersionRequest(dataset_id=digits_dataset.id, train_ratio=ratio))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(exc.value)
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "train_ratio"


def test_publish_writes_a_version_readable_with_only_an_s3_client(stub, digits_dataset, s3):
    """Metadata and manifest, read with a bare S3 client, say what GetVersion and ListImages say."""
    ds = digits_dataset.id
    first = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds, train_ratio="0.75", seed=7)).version
    published = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds, train_ratio="0.75", seed=7)).version
    v = stub.GetVersion(api.GetVersionRequest(dataset_id=ds, version_name=published.name)).version
    assert v == published
    assert v.name.startswith("v") and v.parent_version == first.name  # same ratio and seed: the split's parent
    assert (v.train_ratio, v.seed) == ("0.75", 7)
    assert (v.train_count, v.validation_count) == (150, 50)
    assert [c.label for c in v.classes] == [str(d) for d in range(10)]
    assert all((c.train_count, c.validation_count) == (15, 5) for c in v.classes)
    ep = s3.endpoint
    raw = Minio(ep.address, ep.credentials.access_key, ep.credentials.secret_key, secure=False)

    def read(key: str) -> bytes:
        response = raw.get_object(ep.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    # metadata.json: every field the API shows, with the same values
    metadata = json.loads(read(v.metadata_key))
    created = v.create_time.ToDatetime(tzinfo=UTC)
    assert metadata["format_version"] == 1
    assert (metadata["dataset_id"], metadata["version"]) == (ds, v.name)
    assert metadata["classes"] == [c.label for c in v.classes]
    assert metadata["counts"] == {c.label: {"TRAIN": c.train_count, "EVAL": c.validation_count} for c in v.classes}
    assert metadata["totals"] == {"TRAIN": v.train_count, "EVAL": v.validation_count, "ALL": 200}
    assert (metadata["train_ratio"], metadata["seed"]) == (v.train_ratio, v.seed)
    assert metadata["parent_version"] == v.parent_version
    first_metadata = json.loads(read(first.metadata_key))
    assert first_metadata["parent_version"] == (first.parent_version or None)
    assert metadata["created"].endswith("Z")
    written = datetime.fromisoformat(metadata["created"].replace("Z", "+00:00"))
    assert abs(written - created) <= timedelta(microseconds=1)  # the API's Timestamp comes from a float
    assert metadata["content_hash"] == v.content_hash

    # manifest.jsonl: its hash, its order, and each line's source, id, usage and annotation
    manifest_bytes = read(v.manifest_key)
    assert hashlib.sha256(manifest_bytes).hexdigest() == v.content_hash
    lines = manifest_bytes.decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 200
    assert all(json.dumps(r, ensure_ascii=False, separators=(",", ":")) == line for r, line in zip(records, lines, strict=True))
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    images = {i.id: i for i in stub.ListImages(api.ListImagesRequest(dataset_id=ds, page_size=1000)).images}
    assert set(images) == {r["id"] for r in records}
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        assert set(record) == {"source", "usage", "id", "annotation"}
        image = images[record["id"]]
        assert record["source"] == f"s3://{ep.bucket}/datasets/{ds}/images/{image.id[:2]}/{image.id}"
        assert record["usage"] in ("TRAIN", "EVAL")
        [annotation] = record["annotation"]
        assert set(annotation) == {"name", "type", "annotated-by", "creation-time"}
        assert annotation["name"] == image.label
        assert annotation["type"] == "modelarts/image_classification"
        assert annotation["annotated-by"] == "human"
        # the label was set by the upload: its time, in UTC to the second
        labeled = datetime.strptime(annotation["creation-time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        uploaded = image.create_time.ToDatetime(tzinfo=UTC)
        assert timedelta(microseconds=-1) <= uploaded - labeled < timedelta(seconds=1), (annotation, uploaded)
        assert labeled <= created
        counts.setdefault(annotation["name"], {"TRAIN": 0, "EVAL": 0})[record["usage"]] += 1
    assert counts == metadata["counts"]
    for record in records:  # the objects the manifest names hold the images it names
        data = read(record["source"].removeprefix(f"s3://{ep.bucket}/"))
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and hashlib.sha256(data).hexdigest() == record["id"]


def test_publish_same_name_twice_is_already_exists(stub, digits_dataset):
    stub.PublishVersion(api.PublishVersionRequest(dataset_id=digits_dataset.id, version_name="fixed"))
    with pytest.raises(grpc.RpcError) as exc:
        stub.PublishVersion(api.PublishVersionRequest(dataset_id=digits_dataset.id, version_name="fixed"))
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    names = [v.name for v in stub.ListVersions(api.ListVersionsRequest(dataset_id=digits_dataset.id)).versions]
    assert names.count("fixed") == 1


def test_split_is_stable_when_data_is_added(stub, objects):
    from trainyard.services.dataset.manifest import parse_manifest

    def usage(version):
        return {e.image_id: e.usage for e in parse_manifest(objects.get_bytes(version.manifest_key))}

    ds = new_dataset(stub)
    files = digit_files(per_class=12)
    upload(stub, ds.id, digit_files(per_class=6))
    first = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id, seed=3)).version
    upload(stub, ds.id, files)  # the first 6 of each class again (duplicates) and 6 new ones
    second = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id, seed=3)).version
    assert second.parent_version == first.name
    before, after = usage(first), usage(second)
    assert len(before) == 60 and len(after) == len(files)
    moved = {i for i, u in before.items() if after[i] != u}
    assert moved == set(), "an image of the earlier version changed its set"


def test_a_ratio_written_with_more_places_continues_the_version_of_the_same_value(stub):
    ds = new_dataset(stub)
    upload(stub, ds.id, digit_files(per_class=6))
    first = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id, train_ratio="0.8", seed=3)).version
    second = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id, train_ratio="0.80000", seed=3)).version
    assert (second.train_ratio, second.parent_version) == ("0.80000", first.name)  # kept as typed, same split
    other = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id, train_ratio="0.75", seed=3)).version
    assert other.parent_version == ""


def test_size_mismatch_is_rejected_as_incomplete(stub):
    ds = new_dataset(stub)
    data = png()

    def requests():
        yield api.UploadImagesRequest(dataset_id=ds.id)
        yield api.UploadImagesRequest(header=api.ImageHeader(file_name="cut.png", label="x", size_bytes=len(data) + 10))
        yield api.UploadImagesRequest(chunk=data)

    response = stub.UploadImages(requests())
    assert response.rejected_count == 1 and "incomplete" in response.results[0].reason
    assert stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.id)).dataset.image_count == 0


def test_set_labels_rename_and_diff(stub):
    ds = new_dataset(stub)
    files = digit_files(per_class=6)
    ids = [r.image_id for r in upload(stub, ds.id, files).results]
    v1 = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id)).version
    # a bad label names its position and changes nothing
    with pytest.raises(grpc.RpcError) as exc:
        stub.SetLabels(api.SetLabelsRequest(dataset_id=ds.id, assignments=[
            api.LabelAssignment(image_id=ids[0], label="7"), api.LabelAssignment(image_id=ids[1], label="bad/label")]))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "assignments[1].label" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        stub.SetLabels(api.SetLabelsRequest(dataset_id=ds.id, assignments=[api.LabelAssignment(image_id="f" * 64, label="x")]))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    changed = stub.SetLabels(api.SetLabelsRequest(dataset_id=ds.id, assignments=[
        api.LabelAssignment(image_id=ids[0], label="7"), api.LabelAssignment(image_id=ids[1], label="")])).changed_count
    assert changed == 2
    renamed = stub.RenameClass(api.RenameClassRequest(dataset_id=ds.id, label="9", new_label="nine")).changed_count
    assert renamed == 6
    v2 = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id)).version
    diff = stub.DiffVersions(api.DiffVersionsRequest(dataset_id=ds.id, base_version=v1.name, target_version=v2.name))
    assert list(diff.removed_image_ids) == [ids[1]] and not diff.added_image_ids
    assert {r.image_id for r in diff.relabeled} == {ids[0]} | {ids[i] for i, f in enumerate(files) if f[1] == "9"}
    changes = {c.label: (c.base_count, c.target_count) for c in diff.class_changes}
    assert changes["9"] == (6, 0) and changes["nine"] == (0, 6) and changes["7"] == (6, 7)


def test_import_manifest_from_the_bucket(stub, objects):
    ds = new_dataset(stub)
    lines = []
    for i, (_, label, data) in enumerate(digit_files(per_class=1)):
        key = f"imports/alpha/{ds.id}/{i}.png"
        objects.put_bytes(key, data)
        lines.append(json.dumps({"source": f"s3://{objects.bucket}/{key}", "annotation": [
            {"name": label, "type": "modelarts/image_classification"}]}))
    lines.append(json.dumps({"source": "s3://elsewhere/x.png", "annotation": []}))
    objects.put_bytes(f"imports/alpha/{ds.id}/manifest.jsonl", "\n".join(lines).encode())
    response = stub.ImportManifest(api.ImportManifestRequest(dataset_id=ds.id, manifest_key=f"imports/alpha/{ds.id}/manifest.jsonl"))
    assert (response.stored_count, response.rejected_count) == (10, 1)
    inline = stub.ImportManifest(api.ImportManifestRequest(dataset_id=ds.id, manifest_content="\n".join(lines).encode()))
    assert (inline.duplicate_count, inline.rejected_count) == (10, 1)
    with pytest.raises(grpc.RpcError) as exc:
        stub.ImportManifest(api.ImportManifestRequest(dataset_id=ds.id, manifest_content=b'{"source": 1}'))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "line 1" in exc.value.details()
    report = stub.CheckTrainability(api.CheckTrainabilityRequest(dataset_id=ds.id)).report
    assert len(report.classes) == 10


def test_delete_frees_the_name_and_keeps_objects_until_purged(stub, server, objects):
    ds = new_dataset(stub)
    upload(stub, ds.id, [("a.png", "x", png())])
    stub.DeleteDataset(api.DeleteDatasetRequest(dataset_id=ds.id))
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.id))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert objects.list_keys(f"datasets/{ds.id}/")  # still readable by jobs that use it
    again = stub.CreateDataset(api.CreateDatasetRequest(display_name=ds.display_name)).dataset
    assert again.id != ds.id
    assert server.service.purge_deleted(retention_seconds=3600) == []  # within the retention
    assert ds.id in server.service.purge_deleted(retention_seconds=0)
    assert objects.list_keys(f"datasets/{ds.id}/") == []


def test_orphaned_image_objects_are_swept_and_nothing_referenced_is(stub, server, objects):
    """Objects an upload wrote before it was cut off (no row) go; stored images and busy datasets stay."""
    ds = new_dataset(stub)
    upload(stub, ds.id, [("kept.png", "x", png((1, 2, 3)))])
    kept = objects.list_keys(f"datasets/{ds.id}/images/")
    orphan = f"datasets/{ds.id}/images/ab/ab{'0' * 62}"
    objects.put_bytes(orphan, png((9, 9, 9)))
    assert server.service.sweep_orphans(grace_seconds=3600) == 0  # too young: an upload may still commit it
    with server.service._writers.writing(ds.id):  # an upload in progress on the dataset
        assert server.service.sweep_orphans(grace_seconds=0) == 0
    assert server.service.sweep_orphans(grace_seconds=0) >= 1
    assert objects.list_keys(f"datasets/{ds.id}/images/") == kept
    listed = stub.ListImages(api.ListImagesRequest(dataset_id=ds.id)).images
    assert [i.file_name for i in listed] == ["kept.png"]
