"""Tenant isolation and limits of the dataset service, through its gRPC API against a real S3 server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from PIL import Image

from tests.integration.dataset_calls import new_dataset, upload
from tests.integration.rpc_errors import error
from trainyard.dataset.v1 import dataset_service_pb2 as api
from trainyard.dataset.v1 import dataset_service_pb2_grpc as api_grpc
from trainyard.db import Database, SchemaMismatch
from trainyard.sample_data import digit_files
from trainyard.services.dataset.server import DatasetConfig, build
from trainyard.services.dataset.service import Limits
from trainyard.services.dataset.store import DatasetStore

SERVICE = api.DESCRIPTOR.services_by_name["DatasetService"]


# --- helpers ----------------------------------------------------------------------


def png(seed: int, size: tuple[int, int] = (16, 16), noise: bool = False) -> bytes:
    """A small PNG, different for each seed (noise: incompressible, so larger)."""
    if noise:
        image = Image.frombytes("RGB", size, hashlib.shake_256(str(seed).encode()).digest(size[0] * size[1] * 3))
    else:
        image = Image.new("RGB", size, (seed % 256, seed // 256 % 256, 7))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def stub_for(security, port: int, tenant: str | None = None, *, internal_for: str | None = None):
    """A stub calling as `tenant` (a new key; None: alpha), or as a service acting for a tenant."""
    address = f"127.0.0.1:{port}"
    if internal_for is not None:
        return api_grpc.DatasetServiceStub(security.channel(address, internal_for=internal_for))
    key = security.keys.create(tenant)[1] if tenant else None
    return api_grpc.DatasetServiceStub(security.channel(address, api_key=key))


def tenant_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def make_server(tmp_path_factory, s3_config, security, limits: Limits | None = None):
    config = DatasetConfig("127.0.0.1:0", tmp_path_factory.mktemp("dataset"), s3_config, limits or Limits(), security.config)
    running, service = build(config)
    running.service = service
    return running


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_config, security):
    running = make_server(tmp_path_factory, s3_config, security)
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def alpha(server, security):
    return stub_for(security, server.port)


@pytest.fixture(scope="module")
def beta(server, security):
    return stub_for(security, server.port, "beta")


@pytest.fixture(scope="module")
def alpha_dataset(alpha):
    """Alpha's trainable dataset with two published versions."""
    ds = new_dataset(alpha)
    assert upload(alpha, ds.id, digit_files(per_class=6)).stored_count == 60
    alpha.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id, version_name="v1"))
    zero = alpha.ListImages(api.ListImagesRequest(dataset_id=ds.id, label="0", page_size=1)).images[0]
    alpha.SetLabels(api.SetLabelsRequest(dataset_id=ds.id, assignments=[api.LabelAssignment(image_id=zero.id, label="1")]))
    alpha.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id, version_name="v2"))
    return alpha.GetDataset(api.GetDatasetRequest(dataset_id=ds.id)).dataset


def snapshot(stub, objects, dataset_id: str) -> dict:
    """Everything of a dataset that a foreign call could change."""
    ds = stub.GetDataset(api.GetDatasetRequest(dataset_id=dataset_id)).dataset
    images = stub.ListImages(api.ListImagesRequest(dataset_id=dataset_id, page_size=1000)).images
    versions = stub.ListVersions(api.ListVersionsRequest(dataset_id=dataset_id)).versions
    return {
        "dataset": (ds.display_name, ds.description, ds.image_count, ds.labeled_image_count, ds.version_count),
        "images": sorted((i.id, i.label, i.file_name) for i in images),
        "versions": [(v.name, v.content_hash, v.train_count, v.validation_count) for v in versions],
        "objects": objects.list_keys(f"datasets/{dataset_id}/"),
    }


# --- isolation --------------------------------------------------------------------


def rpc_calls(objects, target: str, image_id: str, image_key: str):
    """Each RPC that names a dataset, called on `target` (a dataset id or display name)."""
    manifest = json.dumps({"source": f"s3://{objects.bucket}/{image_key}", "annotation": []}).encode()
    return {
        "GetDataset": lambda s: s.GetDataset(api.GetDatasetRequest(dataset_id=target)),
        "UploadImages": lambda s: upload(s, target, [("a.png", "x", png(1))]),
        "ListImages": lambda s: s.ListImages(api.ListImagesRequest(dataset_id=target)),
        "CheckTrainability": lambda s: s.CheckTrainability(api.CheckTrainabilityRequest(dataset_id=target)),
        "PublishVersion": lambda s: s.PublishVersion(api.PublishVersionRequest(dataset_id=target, version_name="stolen")),
        "GetVersion": lambda s: s.GetVersion(api.GetVersionRequest(dataset_id=target, version_name="v1")),
        "ListVersions": lambda s: s.ListVersions(api.ListVersionsRequest(dataset_id=target)),
        "SetLabels": lambda s: s.SetLabels(api.SetLabelsRequest(
            dataset_id=target, assignments=[api.LabelAssignment(image_id=image_id, label="mine")])),
        "RenameClass": lambda s: s.RenameClass(api.RenameClassRequest(dataset_id=target, label="1", new_label="one")),
        "DiffVersions": lambda s: s.DiffVersions(api.DiffVersionsRequest(dataset_id=target, base_version="v1", target_version="v2")),
        "ImportManifest": lambda s: s.ImportManifest(api.ImportManifestRequest(dataset_id=target, manifest_content=manifest)),
        "ExportManifest": lambda s: list(s.ExportManifest(api.ExportManifestRequest(dataset_id=target, version_name="v1"))),
        "DeleteDataset": lambda s: s.DeleteDataset(api.DeleteDatasetRequest(dataset_id=target)),
    }


@pytest.mark.parametrize("by", ["id", "display_name"])
def test_every_rpc_on_another_tenants_dataset_is_not_found_like_a_missing_one(alpha, beta, alpha_dataset, objects, by):
    target = alpha_dataset.id if by == "id" else alpha_dataset.display_name
    missing = "ds-00000000" if by == "id" else "no-such-dataset"
    image = alpha.ListImages(api.ListImagesRequest(dataset_id=alpha_dataset.id, page_size=1)).images[0]
    image_key = f"datasets/{alpha_dataset.id}/images/{image.id[:2]}/{image.id}"
    before = snapshot(alpha, objects, alpha_dataset.id)

    foreign = rpc_calls(objects, target, image.id, image_key)
    unknown = rpc_calls(objects, missing, image.id, image_key)
    for name, call in foreign.items():
        got = error(lambda call=call: call(beta))
        expected = error(lambda name=name: unknown[name](beta))
        assert (got.code(), expected.code()) == (grpc.StatusCode.NOT_FOUND,) * 2, (name, got.details())
        assert got.details() == expected.details().replace(missing, target), name

    # The two RPCs that name no dataset: beta may reuse alpha's name, and never lists alpha's datasets.
    theirs = beta.CreateDataset(api.CreateDatasetRequest(display_name=alpha_dataset.display_name)).dataset
    assert theirs.id != alpha_dataset.id
    assert alpha_dataset.id not in {d.id for d in beta.ListDatasets(api.ListDatasetsRequest(page_size=1000)).datasets}
    beta.DeleteDataset(api.DeleteDatasetRequest(dataset_id=theirs.id))

    covered = set(foreign) | {"CreateDataset", "ListDatasets"}
    assert covered == {m.name for m in SERVICE.methods}, "an RPC of DatasetService is not checked here"
    assert snapshot(alpha, objects, alpha_dataset.id) == before


def test_same_display_name_in_two_tenants(alpha, beta):
    name = "flowers-" + uuid.uuid4().hex[:6]
    mine, theirs = new_dataset(alpha, name), new_dataset(beta, name)
    assert mine.id != theirs.id
    assert alpha.GetDataset(api.GetDatasetRequest(dataset_id=name)).dataset.id == mine.id
    assert beta.GetDataset(api.GetDatasetRequest(dataset_id=name)).dataset.id == theirs.id
    for stub in (alpha, beta):
        assert error(lambda stub=stub: new_dataset(stub, name)).code() == grpc.StatusCode.ALREADY_EXISTS
    # a name is resolved within the tenant: an upload by name lands in the caller's own dataset
    assert upload(beta, name, [("b.png", "x", png(2))]).stored_count == 1
    assert (alpha.GetDataset(api.GetDatasetRequest(dataset_id=name)).dataset.image_count,
            beta.GetDataset(api.GetDatasetRequest(dataset_id=name)).dataset.image_count) == (0, 1)


def test_listing_shows_only_the_callers_datasets(server, security, alpha):
    gamma, delta = stub_for(security, server.port, tenant_name("gamma")), stub_for(security, server.port, tenant_name("delta"))
    mine = [new_dataset(gamma).id for _ in range(3)]
    theirs = new_dataset(delta).id
    assert [d.id for d in gamma.ListDatasets(api.ListDatasetsRequest(page_size=1000)).datasets] == mine
    assert [d.id for d in delta.ListDatasets(api.ListDatasetsRequest(page_size=1000)).datasets] == [theirs]
    first = gamma.ListDatasets(api.ListDatasetsRequest(page_size=2))  # pages stay within the tenant
    rest = gamma.ListDatasets(api.ListDatasetsRequest(page_size=2, page_token=first.next_page_token))
    assert [d.id for d in [*first.datasets, *rest.datasets]] == mine
    assert not {*mine, theirs} & {d.id for d in alpha.ListDatasets(api.ListDatasetsRequest(page_size=1000)).datasets}


def test_internal_calls_act_for_the_named_tenant(server, security, alpha_dataset):
    for_alpha = stub_for(security, server.port, internal_for="alpha")
    for_beta = stub_for(security, server.port, internal_for="beta")
    assert for_alpha.GetDataset(api.GetDatasetRequest(dataset_id=alpha_dataset.id)).dataset.id == alpha_dataset.id
    assert for_alpha.GetVersion(api.GetVersionRequest(dataset_id=alpha_dataset.id, version_name="v1")).version.name == "v1"
    assert alpha_dataset.id in {d.id for d in for_alpha.ListDatasets(api.ListDatasetsRequest(page_size=1000)).datasets}
    got = error(lambda: for_beta.GetDataset(api.GetDatasetRequest(dataset_id=alpha_dataset.id)))
    assert got.code() == grpc.StatusCode.NOT_FOUND
    got = error(lambda: for_beta.GetVersion(api.GetVersionRequest(dataset_id=alpha_dataset.id, version_name="v1")))
    assert got.code() == grpc.StatusCode.NOT_FOUND
    assert alpha_dataset.id not in {d.id for d in for_beta.ListDatasets(api.ListDatasetsRequest(page_size=1000)).datasets}
    for_nobody = stub_for(security, server.port, internal_for="")
    got = error(lambda: for_nobody.GetDataset(api.GetDatasetRequest(dataset_id=alpha_dataset.id)))
    assert got.code() == grpc.StatusCode.INVALID_ARGUMENT and "x-trainyard-tenant" in got.details()


def test_import_reads_only_the_callers_own_objects(alpha, beta, alpha_dataset, objects):
    bucket = objects.bucket
    mine = new_dataset(beta)
    v1_manifest = f"datasets/{alpha_dataset.id}/versions/v1/manifest.jsonl"
    # alpha's manifest, by key: refused with the words a key of a dataset that does not exist gets
    got = error(lambda: beta.ImportManifest(api.ImportManifestRequest(dataset_id=mine.id, manifest_key=v1_manifest)))
    absent = error(lambda: beta.ImportManifest(api.ImportManifestRequest(
        dataset_id=mine.id, manifest_key=v1_manifest.replace(alpha_dataset.id, "ds-00000000"))))
    assert got.code() == absent.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert got.details() == absent.details().replace("ds-00000000", alpha_dataset.id)
    assert "manifest_key" in got.details()
    # keys staged for alpha, and keys that a server might normalise into them, are refused too
    objects.put_bytes("imports/alpha/staged.png", png(3))
    for key in ("imports/alpha/staged.png", "imports/beta/../alpha/staged.png", "imports/beta//x", "models/x"):
        got = error(lambda key=key: beta.ImportManifest(api.ImportManifestRequest(dataset_id=mine.id, manifest_key=key)))
        assert got.code() == grpc.StatusCode.INVALID_ARGUMENT, key
    # alpha's images named inside an inline manifest: each refused, nothing stored
    lines = objects.get_bytes(f"datasets/{alpha_dataset.id}/versions/v1/manifest.jsonl").decode().splitlines()
    lines.append(json.dumps({"source": f"s3://{bucket}/imports/alpha/staged.png", "annotation": []}))
    response = beta.ImportManifest(api.ImportManifestRequest(dataset_id=mine.id, manifest_content="\n".join(lines).encode()))
    assert (response.stored_count, response.rejected_count) == (0, len(lines))
    assert all("not importable" in r.reason for r in response.results)
    assert beta.GetDataset(api.GetDatasetRequest(dataset_id=mine.id)).dataset.image_count == 0
    # the caller's own objects import: a staged manifest and images, and its own version's manifest
    objects.put_bytes("imports/beta/own.png", png(4))
    objects.put_bytes("imports/beta/manifest.jsonl", json.dumps(
        {"source": f"s3://{bucket}/imports/beta/own.png", "annotation": [{"name": "x"}]}).encode())
    staged = beta.ImportManifest(api.ImportManifestRequest(dataset_id=mine.id, manifest_key="imports/beta/manifest.jsonl"))
    assert staged.stored_count == 1
    copy = new_dataset(alpha)
    copied = alpha.ImportManifest(api.ImportManifestRequest(dataset_id=copy.id, manifest_key=v1_manifest))
    assert copied.stored_count == 60


# --- limits -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, s3_config, security):
    """A server with tiny limits: 3 images per dataset, 1000 bytes per image, 300 bytes per tenant."""
    running = make_server(tmp_path_factory, s3_config, security,
                          Limits(max_image_bytes=1000, max_dataset_images=3, max_tenant_bytes=300))
    yield running
    running.stop(0)


def small(seeds) -> list[tuple[str, str, bytes]]:
    files = [(f"{s}.png", "x", png(s)) for s in seeds]
    assert all(len(data) <= 100 for _, _, data in files)  # so 3 fit in the tenant's 300 bytes
    return files


def test_images_per_dataset_limit(tiny, security, objects):
    tenant = tenant_name("count")
    stub = stub_for(security, tiny.port, tenant)
    ds = new_dataset(stub)
    assert upload(stub, ds.id, small([1, 2])).stored_count == 2
    before = snapshot(stub, objects, ds.id)
    for files in (small([3, 4]), small([1, 3, 4]), small([5, 6, 7, 8])):
        got = error(lambda files=files: upload(stub, ds.id, files))
        assert got.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "TRAINYARD_DATASET_MAX_IMAGES" in got.details() and "3 images per dataset" in got.details()
        assert snapshot(stub, objects, ds.id)["images"] == before["images"]
    assert upload(stub, ds.id, small([1, 2, 3])).stored_count == 1  # up to the limit
    retry = upload(stub, ds.id, small([1, 2, 3]))  # duplicates only: a retry is always fine
    assert (retry.duplicate_count, retry.stored_count) == (3, 0)
    # an import is held to the same limit
    objects.put_bytes(f"imports/{tenant}/new.png", png(9))
    line = json.dumps({"source": f"s3://{objects.bucket}/imports/{tenant}/new.png", "annotation": [{"name": "x"}]})
    got = error(lambda: stub.ImportManifest(api.ImportManifestRequest(dataset_id=ds.id, manifest_content=line.encode())))
    assert got.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "TRAINYARD_DATASET_MAX_IMAGES" in got.details()
    assert snapshot(stub, objects, ds.id)["images"] == sorted(
        (i.id, i.label, i.file_name) for i in stub.ListImages(api.ListImagesRequest(dataset_id=ds.id)).images)
    assert stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.id)).dataset.image_count == 3


def test_images_per_dataset_limit_holds_under_concurrent_uploads(tiny, security):
    stub = stub_for(security, tiny.port, tenant_name("race"))
    ds = new_dataset(stub)

    def one(seed):
        try:
            return upload(stub, ds.id, small([seed])).stored_count
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
            return 0

    with ThreadPoolExecutor(8) as pool:
        stored = list(pool.map(one, range(100, 108)))
    assert sum(stored) == 3
    assert stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.id)).dataset.image_count == 3


def test_tenant_bytes_limit_counts_live_datasets_only(tiny, security, objects):
    tenant = tenant_name("bytes")
    stub, other = stub_for(security, tiny.port, tenant), stub_for(security, tiny.port, tenant_name("other"))
    first, second = new_dataset(stub), new_dataset(stub)
    files = small([10, 11, 12, 13, 14, 15])
    used = sum(len(d) for _, _, d in files[:3])
    assert used <= 300 < used + len(files[3][2])
    assert upload(stub, first.id, files[:3]).stored_count == 3
    before = snapshot(stub, objects, first.id)
    got = error(lambda: upload(stub, second.id, files[3:4]))
    assert got.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "TRAINYARD_TENANT_MAX_BYTES" in got.details() and "300 bytes per tenant" in got.details()
    assert f"tenant {tenant!r}" in got.details()
    assert stub.GetDataset(api.GetDatasetRequest(dataset_id=second.id)).dataset.image_count == 0
    assert snapshot(stub, objects, first.id) == before
    assert upload(other, new_dataset(other).id, files[3:6]).stored_count == 3  # another tenant has its own budget
    stub.DeleteDataset(api.DeleteDatasetRequest(dataset_id=first.id))  # a deleted dataset no longer counts
    assert upload(stub, second.id, files[3:4]).stored_count == 1


def test_image_bytes_limit_rejects_the_file_naming_the_limit(tiny, security, objects):
    stub = stub_for(security, tiny.port, tenant_name("size"))
    ds = new_dataset(stub)
    big = png(20, size=(32, 32), noise=True)
    assert len(big) > 1000
    response = upload(stub, ds.id, [("big.png", "x", big), *small([21])])
    assert [r.status for r in response.results] == [3, 1]  # REJECTED, STORED
    assert "TRAINYARD_MAX_IMAGE_BYTES" in response.results[0].reason and "1,000 bytes" in response.results[0].reason
    assert stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.id)).dataset.image_count == 1


# --- an existing data directory -----------------------------------------------------

SCHEMA_1 = """
CREATE TABLE datasets (id TEXT PRIMARY KEY, display_name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',
    create_time REAL NOT NULL, deleted_time REAL);
CREATE TABLE images (dataset_id TEXT NOT NULL REFERENCES datasets(id), image_id TEXT NOT NULL, file_name TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '', format TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL, create_time REAL NOT NULL, label_time REAL NOT NULL, PRIMARY KEY (dataset_id, image_id));
CREATE INDEX images_by_label ON images(dataset_id, label);
CREATE TABLE versions (dataset_id TEXT NOT NULL REFERENCES datasets(id), name TEXT NOT NULL, seq INTEGER NOT NULL,
    train_ratio TEXT NOT NULL, seed INTEGER NOT NULL, create_time REAL NOT NULL, manifest_key TEXT NOT NULL,
    metadata_key TEXT NOT NULL, content_hash TEXT NOT NULL, parent_version TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dataset_id, name));
CREATE TABLE version_samples (dataset_id TEXT NOT NULL, version TEXT NOT NULL, image_id TEXT NOT NULL,
    label TEXT NOT NULL, usage TEXT NOT NULL CHECK (usage IN ('TRAIN', 'EVAL')),
    PRIMARY KEY (dataset_id, version, image_id), FOREIGN KEY (dataset_id, version) REFERENCES versions(dataset_id, name));
INSERT INTO datasets VALUES ('ds-old1', 'flowers', 'from release 1', 1.0, NULL);
INSERT INTO datasets VALUES ('ds-old2', 'gone#deleted-ds-old2', '', 2.0, 3.0);
INSERT INTO images VALUES ('ds-old1', 'aa11', 'a.png', 'rose', 'PNG', 8, 8, 70, 1.0, 1.0);
INSERT INTO versions VALUES ('ds-old1', 'v1', 1, '0.8', 0, 1.0, 'datasets/ds-old1/versions/v1/manifest.jsonl',
    'datasets/ds-old1/versions/v1/metadata.json', 'hash', '');
INSERT INTO version_samples VALUES ('ds-old1', 'v1', 'aa11', 'rose', 'TRAIN');
PRAGMA user_version = 1;
"""


def old_database(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_1)
    conn.close()
    return path


def test_a_release_1_database_is_migrated_to_the_default_tenant(tmp_path, s3_config, security):
    old_database(tmp_path / "dataset" / "dataset.db")
    store = DatasetStore(tmp_path / "dataset" / "dataset.db")
    assert store.db.query_one("PRAGMA user_version")[0] == 2
    assert store.db.query("PRAGMA foreign_key_check") == []
    row = store.find_dataset("default", "flowers")
    assert (row.id, row.tenant, row.description, row.image_count, row.version_count) == ("ds-old1", "default", "from release 1", 1, 1)
    assert store.find_dataset("alpha", "flowers") is None
    assert [r["tenant"] for r in store.db.query("SELECT tenant FROM datasets ORDER BY id")] == ["default", "default"]
    store.db.close()
    # the service on that directory: the default tenant's key sees its data, and names are per tenant now
    running = make_server_at(tmp_path, s3_config, security)
    try:
        default = stub_for(security, running.port, "default")
        alpha = stub_for(security, running.port)
        assert default.GetDataset(api.GetDatasetRequest(dataset_id="flowers")).dataset.id == "ds-old1"
        assert [v.name for v in default.ListVersions(api.ListVersionsRequest(dataset_id="ds-old1")).versions] == ["v1"]
        assert error(lambda: alpha.GetDataset(api.GetDatasetRequest(dataset_id="ds-old1"))).code() == grpc.StatusCode.NOT_FOUND
        assert new_dataset(alpha, "flowers").display_name == "flowers"
    finally:
        running.stop(0)
    DatasetStore(tmp_path / "dataset" / "dataset.db").db.close()  # opening a migrated file again: nothing to do


def make_server_at(data_dir: Path, s3_config, security):
    config = DatasetConfig("127.0.0.1:0", data_dir / "dataset", s3_config, Limits(), security.config)
    running, _ = build(config)
    return running


def test_a_failed_migration_changes_nothing(tmp_path):
    path = old_database(tmp_path / "x.db")
    broken = {1: "CREATE TABLE t (a INTEGER);\nINSERT INTO no_such_table VALUES (1);"}
    with pytest.raises(sqlite3.OperationalError):
        Database(path, "CREATE TABLE IF NOT EXISTS t2 (a INTEGER);", version=2, migrations=broken)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('t', 't2')").fetchone()[0] == 0
    conn.close()
    with pytest.raises(SchemaMismatch):  # no path of migrations from 1 to 3
        Database(path, "", version=3, migrations={2: "SELECT 1;"})
    assert os.path.exists(path)
