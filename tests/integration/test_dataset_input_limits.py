"""Inputs at and past the dataset service's size and character limits.

Each bad input is answered with its status code, the field and the limit or rule it
breaks, in a message of bounded size (a huge value is quoted cut, with its length);
and it leaves behind nothing: no row, no object, no label changed, nothing stored
before lost. A real gRPC server on loopback and a real S3 server, as in
test_dataset_api_inputs.py.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import grpc
import pytest

from tests.integration.dataset_calls import new_dataset, upload, upload_requests
from tests.integration.rpc_errors import bad_fields, error
from trainyard.dataset.v1 import dataset_pb2
from trainyard.dataset.v1 import dataset_service_pb2 as api
from trainyard.dataset.v1 import dataset_service_pb2_grpc as api_grpc
from trainyard.rpc import MAX_MESSAGE_BYTES
from trainyard.sample_data import digit_files
from trainyard.services.dataset.server import DatasetConfig, build
from trainyard.services.dataset.service import (
    MAX_FILE_NAME_BYTES,
    MAX_FILES_PER_REQUEST,
    MAX_MANIFEST_BYTES,
    MAX_OBJECT_KEY_BYTES,
    MAX_REASON_BYTES,
    Limits,
    image_key,
)

STORED, DUPLICATE, REJECTED = (
    dataset_pb2.UPLOAD_STATUS_STORED,
    dataset_pb2.UPLOAD_STATUS_DUPLICATE,
    dataset_pb2.UPLOAD_STATUS_REJECTED,
)
TENANT = "alpha"  # the tenant of the tests' API key (tests/conftest.py)
HUGE = 6_000  # characters of the huge values: well past what gRPC lets a message header carry
LONGEST_MESSAGE = 600  # characters an error message may have, however large the input


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_config, security):
    config = DatasetConfig(
        "127.0.0.1:0", tmp_path_factory.mktemp("limits"), s3_config, Limits(), security.config
    )
    running, service = build(config)
    running.service = service
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def stub(server, security):
    return api_grpc.DatasetServiceStub(security.channel(f"127.0.0.1:{server.port}"))


@pytest.fixture(scope="module")
def digits():
    """The digits as (file name, label, PNG bytes): 1,797 distinct images."""
    return digit_files()


@pytest.fixture
def stocked(stub, digits):
    """A fresh dataset holding 6 labeled digits of each class (trainable), and v1 of it."""
    ds = new_dataset(stub)
    taken: Counter[str] = Counter()
    files = []
    for name, label, data in digits:
        if taken[label] < 6:
            taken[label] += 1
            files.append((name, label, data))
    assert upload(stub, ds.id, files).stored_count == 60
    stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id, version_name="v1"))
    return ds


# --- helpers ----------------------------------------------------------------------


def refused(call, code: grpc.StatusCode, field: str | None, *words: str) -> str:
    """The call fails with `code` on `field`, its message short and holding `words`."""
    exc = error(call)
    assert exc.code() == code, (exc.code(), exc.details()[:300])
    details = exc.details()
    assert len(details) <= LONGEST_MESSAGE, details
    assert all(word in details for word in words), details
    if field is not None:
        assert details.startswith(f"{field}: "), details
        assert bad_fields(exc) == [field]
    return details


def state(stub, objects, dataset_id: str) -> dict:
    """Everything a refused call must leave as it was: rows, labels, counts, versions, objects."""
    images, token = [], ""
    while True:
        page = stub.ListImages(
            api.ListImagesRequest(dataset_id=dataset_id, page_size=1000, page_token=token)
        )
        images += [(i.id, i.file_name, i.label) for i in page.images]
        token = page.next_page_token
        if not token:
            break
    dataset = stub.GetDataset(api.GetDatasetRequest(dataset_id=dataset_id)).dataset
    versions = stub.ListVersions(api.ListVersionsRequest(dataset_id=dataset_id)).versions
    return {
        "images": sorted(images),
        "counts": (dataset.image_count, dataset.labeled_image_count, dataset.version_count),
        "versions": [(v.name, v.content_hash) for v in versions],
        "objects": objects.list_keys(f"datasets/{dataset_id}/"),
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stage(objects, dataset_id: str, files) -> list[str]:
    """Put the files' bytes under the tenant's import prefix; their manifest lines."""
    lines = []
    for name, label, data in files:
        key = f"imports/{TENANT}/{dataset_id}/{name.replace('/', '-')}"
        objects.put_bytes(key, data)
        annotation = [{"name": label, "type": "modelarts/image_classification"}]
        lines.append(
            json.dumps({"source": f"s3://{objects.bucket}/{key}", "annotation": annotation})
        )
    return lines


# --- 1. file names: length and control characters ------------------------------------


def test_a_file_name_over_1024_bytes_is_rejected_by_itself_and_listing_still_works(
    stub, objects, digits
):
    ds = new_dataset(stub)
    # (file name, stored?) — the limit counts UTF-8 bytes: 256 × U+1D11E is 1,024 bytes
    cases = [
        ("a" * MAX_FILE_NAME_BYTES, True),
        ("b" * (MAX_FILE_NAME_BYTES + 1), False),
        ("\U0001d11e" * 256, True),
        ("\u00e9" * 513, False),  # 513 characters, 1,026 bytes
        ("c" * (9 * 2**20), False),  # the 9 MiB name that broke UploadImages and ListImages
        ("plain.png", True),
    ]
    files = [(name, "x", digits[i][2]) for i, (name, _) in enumerate(cases)]
    response = upload(stub, ds.id, files)

    assert response.ByteSize() < 64 * 1024
    for (name, stored), result, (_, _, data) in zip(cases, response.results, files, strict=True):
        size = len(name.encode())
        if stored:
            assert (result.status, result.file_name, result.image_id) == (STORED, name, sha(data))
        else:
            assert (result.status, result.image_id) == (REJECTED, "")
            assert result.reason == (
                f"file_name is {size:,} bytes long (UTF-8); at most 1,024 bytes are allowed"
            )
            assert len(result.file_name.encode()) <= MAX_FILE_NAME_BYTES
            assert result.file_name.endswith("…") and name.startswith(result.file_name[:-1])
            assert objects.list_keys(image_key(ds.id, sha(data))) == []
    assert (response.stored_count, response.rejected_count) == (3, 3)
    after = state(stub, objects, ds.id)
    assert sorted(name for _, name, _ in after["images"]) == sorted(n for n, ok in cases if ok)
    assert after["counts"] == (3, 3, 0)
    for page_size in (1, 2, 1000):  # every page of the listing answers
        page = stub.ListImages(api.ListImagesRequest(dataset_id=ds.id, page_size=page_size))
        assert len(page.images) == min(page_size, 3)


CONTROLS = ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85"]


def test_a_file_name_with_a_control_character_is_rejected_and_the_others_are_stored(
    stub, objects, digits
):
    ds = new_dataset(stub)
    names = [f"bad{c}name.png" for c in CONTROLS] + ["good name.png"]
    files = [(name, "x", digits[i][2]) for i, name in enumerate(names)]
    response = upload(stub, ds.id, files)

    for char, result, (_, _, data) in zip(CONTROLS, response.results[:-1], files[:-1], strict=True):
        assert (result.status, result.image_id) == (REJECTED, "")
        assert result.reason == (
            f"file_name contains the control character(s) {char!r} (U+{ord(char):04X}), "
            "which are not allowed"
        )
        assert objects.list_keys(image_key(ds.id, sha(data))) == []
    assert response.results[-1].status == STORED
    assert [
        i.file_name for i in stub.ListImages(api.ListImagesRequest(dataset_id=ds.id)).images
    ] == ["good name.png"]


# --- 1b. how many files one stream may send -------------------------------------------


def test_a_stream_of_more_than_5000_files_is_refused_and_records_nothing(stub, objects, digits):
    ds = new_dataset(stub)
    assert upload(stub, ds.id, digits[:3]).stored_count == 3
    before = state(stub, objects, ds.id)
    new = digits[3:6]
    files = new + [(f"e{i}.png", "", b"") for i in range(MAX_FILES_PER_REQUEST + 1 - len(new))]
    refused(
        lambda: upload(stub, ds.id, files),
        grpc.StatusCode.INVALID_ARGUMENT,
        "header",
        "more than 5,000 files",
        "at most 5,000 files per UploadImages stream",
        "Nothing of this stream was recorded",
    )
    after = state(stub, objects, ds.id)
    assert {k: v for k, v in after.items() if k != "objects"} == {
        k: v for k, v in before.items() if k != "objects"
    }
    assert set(before["objects"]) <= set(after["objects"])  # unreferenced objects are swept later
    at_cap = upload(stub, ds.id, files[:MAX_FILES_PER_REQUEST])  # exactly the cap is fine
    assert (at_cap.stored_count, at_cap.rejected_count) == (3, MAX_FILES_PER_REQUEST - 3)


def test_the_largest_response_an_upload_can_have_fits_one_message(stub):
    """5,000 files, each with the longest name (in 4-byte characters) and the longest reason."""
    ds = new_dataset(stub)
    name = "\U0001d11e" * (MAX_FILE_NAME_BYTES // 4)
    label = " " + "".join(chr(0x1F600 + i) for i in range(200)) + " "  # breaks every label rule
    requests = upload_requests(ds.id, [(name, label, b"x")] * MAX_FILES_PER_REQUEST)
    response = stub.UploadImages(requests)
    assert response.rejected_count == MAX_FILES_PER_REQUEST
    assert response.results[0].reason.startswith("bad label: ") and "label: label" not in response.results[0].reason
    largest = max(r.ByteSize() for r in response.results)
    assert largest <= 2048, largest
    assert response.ByteSize() <= MAX_MESSAGE_BYTES * 0.6, response.ByteSize()


# --- 2. error messages quote a huge value cut, with its length ---------------------------


def huge(prefix: str = "") -> str:
    return prefix + "x" * (HUGE - len(prefix))


NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
HUGE_CASES = {
    "GetDataset": (
        lambda s, ds: s.GetDataset(api.GetDatasetRequest(dataset_id=huge("ds-"))),
        NOT_FOUND,
        None,
    ),
    "DeleteDataset": (
        lambda s, ds: s.DeleteDataset(api.DeleteDatasetRequest(dataset_id=huge("ds-"))),
        NOT_FOUND,
        None,
    ),
    "UploadImages": (
        lambda s, ds: upload(s, huge("ds-"), [("a.png", "", b"x")]),
        NOT_FOUND,
        None,
    ),
    "ListImages label": (
        lambda s, ds: s.ListImages(api.ListImagesRequest(dataset_id=ds, label=huge())),
        INVALID,
        "label",
    ),
    "GetVersion": (
        lambda s, ds: s.GetVersion(api.GetVersionRequest(dataset_id=ds, version_name=huge())),
        NOT_FOUND,
        None,
    ),
    "DiffVersions": (
        lambda s, ds: s.DiffVersions(
            api.DiffVersionsRequest(dataset_id=ds, base_version="v1", target_version=huge())
        ),
        NOT_FOUND,
        None,
    ),
    "RenameClass label": (
        lambda s, ds: s.RenameClass(
            api.RenameClassRequest(dataset_id=ds, label=huge(), new_label="y")
        ),
        NOT_FOUND,
        None,
    ),
    "RenameClass new_label": (
        lambda s, ds: s.RenameClass(
            api.RenameClassRequest(dataset_id=ds, label="1", new_label=huge())
        ),
        INVALID,
        "new_label",
    ),
    "SetLabels image_id": (
        lambda s, ds: s.SetLabels(
            api.SetLabelsRequest(
                dataset_id=ds, assignments=[api.LabelAssignment(image_id=huge(), label="y")]
            )
        ),
        INVALID,
        "assignments[0].image_id",
    ),
    "SetLabels label": (
        lambda s, ds: s.SetLabels(
            api.SetLabelsRequest(
                dataset_id=ds, assignments=[api.LabelAssignment(image_id="f" * 64, label=huge("/"))]
            )
        ),
        INVALID,
        "assignments[0].label",
    ),
    "PublishVersion version_name": (
        lambda s, ds: s.PublishVersion(
            api.PublishVersionRequest(dataset_id=ds, version_name=huge())
        ),
        INVALID,
        "version_name",
    ),
    "PublishVersion train_ratio digits": (
        lambda s, ds: s.PublishVersion(
            api.PublishVersionRequest(dataset_id=ds, train_ratio="0." + "1" * (HUGE - 2))
        ),
        INVALID,
        "train_ratio",
    ),
    "PublishVersion train_ratio words": (
        lambda s, ds: s.PublishVersion(
            api.PublishVersionRequest(dataset_id=ds, train_ratio=huge())
        ),
        INVALID,
        "train_ratio",
    ),
    "CreateDataset display_name": (
        lambda s, ds: s.CreateDataset(api.CreateDatasetRequest(display_name=huge())),
        INVALID,
        "display_name",
    ),
    "CreateDataset description": (
        lambda s, ds: s.CreateDataset(
            api.CreateDatasetRequest(display_name="d", description=huge())
        ),
        INVALID,
        "description",
    ),
    "ImportManifest manifest_key": (
        lambda s, ds: s.ImportManifest(
            api.ImportManifestRequest(dataset_id=ds, manifest_key=huge(f"imports/{TENANT}/"))
        ),
        INVALID,
        "manifest_key",
    ),
    "ImportManifest source": (
        lambda s, ds: s.ImportManifest(
            api.ImportManifestRequest(
                dataset_id=ds, manifest_content=json.dumps({"source": huge("ftp://")}).encode()
            )
        ),
        INVALID,
        "manifest_content",
    ),
}


@pytest.mark.parametrize("case", list(HUGE_CASES))
def test_a_huge_value_is_quoted_cut_and_the_right_error_arrives(stub, objects, stocked, case):
    """A 6,000-character value made the client see RESOURCE_EXHAUSTED (metadata over the
    soft limit) instead of the error; now the error arrives, quoting the value cut."""
    call, code, field = HUGE_CASES[case]
    before = state(stub, objects, stocked.id)
    details = refused(lambda: call(stub, stocked.id), code, field)
    assert "x" * 100 not in details and "1" * 100 not in details
    assert state(stub, objects, stocked.id) == before


def test_a_huge_dataset_id_is_not_found_with_its_length_said(stub):
    details = refused(
        lambda: stub.GetDataset(api.GetDatasetRequest(dataset_id=huge("ds-"))),
        NOT_FOUND,
        None,
        "does not exist",
        "(6,000 characters)",
    )
    assert details.startswith("dataset 'ds-xxx")


# --- 3, 4, 6. ImportManifest: deep nesting, bad keys, the field named -----------------------

DEEP = {
    "arrays": b"[" * 200_000 + b"]" * 200_000,
    "objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
}


@pytest.mark.parametrize("kind", list(DEEP))
def test_deeply_nested_json_is_invalid_argument_naming_the_line_and_the_field(
    stub, objects, digits, kind
):
    ds = new_dataset(stub)
    content = "\n".join(stage(objects, ds.id, digits[:1])).encode() + b"\n" + DEEP[kind]
    before = state(stub, objects, ds.id)
    refused(
        lambda: stub.ImportManifest(
            api.ImportManifestRequest(dataset_id=ds.id, manifest_content=content)
        ),
        INVALID,
        "manifest_content",
        "line 2: nests arrays or objects too deeply",
    )
    key = f"imports/{TENANT}/{ds.id}/deep.jsonl"
    objects.put_bytes(key, content)
    refused(
        lambda: stub.ImportManifest(api.ImportManifestRequest(dataset_id=ds.id, manifest_key=key)),
        INVALID,
        "manifest_key",
        "line 2: nests arrays or objects too deeply",
    )
    assert state(stub, objects, ds.id) == before


def test_a_malformed_manifest_names_the_field_it_came_in(stub, objects):
    ds = new_dataset(stub)
    refused(
        lambda: stub.ImportManifest(
            api.ImportManifestRequest(dataset_id=ds.id, manifest_content=b'{"source": 1}')
        ),
        INVALID,
        "manifest_content",
        "line 1",
    )
    key = f"imports/{TENANT}/{ds.id}/bad.jsonl"
    objects.put_bytes(key, b"\n\xff\xfe")
    refused(
        lambda: stub.ImportManifest(api.ImportManifestRequest(dataset_id=ds.id, manifest_key=key)),
        INVALID,
        "manifest_key",
        "is not UTF-8 text",
    )


def test_a_source_key_s3_would_refuse_is_rejected_by_itself_and_the_other_lines_import(
    stub, objects, digits, s3_config
):
    ds = new_dataset(stub)
    good = stage(objects, ds.id, digits[:2])
    own = f"s3://{objects.bucket}/imports/{TENANT}/{ds.id}/"
    long_key = f"imports/{TENANT}/{ds.id}/" + "k" * MAX_OBJECT_KEY_BYTES
    lines = [
        good[0],
        json.dumps({"source": own + "x.png\u0000"}),
        json.dumps({"source": own + "line\nbreak.png"}),
        json.dumps({"source": f"s3://{objects.bucket}/{long_key}"}),
        good[1],
    ]
    response = stub.ImportManifest(
        api.ImportManifestRequest(dataset_id=ds.id, manifest_content="\n".join(lines).encode())
    )
    assert [r.status for r in response.results] == [STORED, REJECTED, REJECTED, REJECTED, STORED]
    assert [r.reason for r in response.results[1:4]] == [
        "the object key contains the control character(s) '\\x00' (U+0000), which are not allowed",
        "the object key contains the control character(s) '\\n' (U+000A), which are not allowed",
        f"the object key is {len(long_key):,} bytes long (UTF-8); at most 1,024 bytes are allowed",
    ]
    assert response.results[1].file_name == own + "x.png\u0000"
    cut = response.results[3].file_name
    assert cut.endswith("…") and len(cut.encode()) <= len(own.encode()) + MAX_OBJECT_KEY_BYTES
    assert {i.id for i in stub.ListImages(api.ListImagesRequest(dataset_id=ds.id)).images} == {
        sha(digits[0][2]),
        sha(digits[1][2]),
    }


def test_a_rejection_reason_in_the_object_stores_words_is_cut_to_1024_bytes(stub, objects, digits):
    """A missing object's reason repeats its key as repr: 330 zero-width spaces (990 bytes,
    a valid key) become 1,980 characters of escapes; the result still stays small."""
    ds = new_dataset(stub)
    key = f"imports/{TENANT}/{ds.id}/" + "\u200b" * 330
    lines = [
        json.dumps({"source": f"s3://{objects.bucket}/{key}"}),
        *stage(objects, ds.id, digits[:1]),
    ]
    response = stub.ImportManifest(
        api.ImportManifestRequest(dataset_id=ds.id, manifest_content="\n".join(lines).encode())
    )
    assert [r.status for r in response.results] == [REJECTED, STORED]
    missing = response.results[0]
    assert missing.file_name == f"s3://{objects.bucket}/{key}"
    assert missing.reason.startswith(f"object 'imports/{TENANT}/") and missing.reason.endswith("…")
    assert len(missing.reason.encode()) <= MAX_REASON_BYTES


@pytest.mark.parametrize(
    ("key", "words"),
    [
        (f"imports/{TENANT}/m.jsonl\u0000", ["control character(s) '\\x00' (U+0000)"]),
        (f"imports/{TENANT}/" + "m" * MAX_OBJECT_KEY_BYTES, ["at most 1,024 bytes"]),
    ],
)
def test_a_manifest_key_s3_would_refuse_is_invalid_argument(stub, key, words):
    ds = new_dataset(stub)
    refused(
        lambda: stub.ImportManifest(api.ImportManifestRequest(dataset_id=ds.id, manifest_key=key)),
        INVALID,
        "manifest_key",
        *words,
    )


def test_an_import_of_more_than_5000_lines_is_refused_and_imports_nothing(stub, objects, digits):
    ds = new_dataset(stub)
    lines = stage(objects, ds.id, digits[:2])
    lines += [lines[0]] * (MAX_FILES_PER_REQUEST + 1 - len(lines))
    content = "\n".join(lines).encode()
    refused(
        lambda: stub.ImportManifest(
            api.ImportManifestRequest(dataset_id=ds.id, manifest_content=content)
        ),
        INVALID,
        "manifest_content",
        "has 5,001 lines with a source; at most 5,000",
    )
    assert state(stub, objects, ds.id)["counts"] == (0, 0, 0)
    at_cap = stub.ImportManifest(
        api.ImportManifestRequest(
            dataset_id=ds.id, manifest_content="\n".join(lines[:MAX_FILES_PER_REQUEST]).encode()
        )
    )
    assert (at_cap.stored_count, at_cap.duplicate_count) == (2, MAX_FILES_PER_REQUEST - 2)


def test_a_manifest_object_over_8_mib_is_refused_before_it_is_read(stub, objects):
    ds = new_dataset(stub)
    key = f"imports/{TENANT}/{ds.id}/big.jsonl"
    objects.put_bytes(key, b"\n" * (MAX_MANIFEST_BYTES + 1))
    refused(
        lambda: stub.ImportManifest(api.ImportManifestRequest(dataset_id=ds.id, manifest_key=key)),
        INVALID,
        "manifest_key",
        "is 8,388,609 bytes; a manifest has at most 8,388,608",
    )


# --- 5. display names that look like dataset ids ----------------------------------------------


def test_a_display_name_in_the_form_of_a_dataset_id_is_refused(stub, objects, digits):
    other = new_dataset(stub)
    upload(stub, other.id, digits[:1])
    before = state(stub, objects, other.id)
    listed = len(stub.ListDatasets(api.ListDatasetsRequest(page_size=1000)).datasets)
    for name in (other.id, "ds-706f6d5a", "ds-00000000"):
        refused(
            lambda name=name: stub.CreateDataset(api.CreateDatasetRequest(display_name=name)),
            INVALID,
            "display_name",
            f"{name!r} has the form of a dataset id",
            "could reach another dataset",
        )
    assert len(stub.ListDatasets(api.ListDatasetsRequest(page_size=1000)).datasets) == listed
    assert stub.GetDataset(api.GetDatasetRequest(dataset_id=other.id)).dataset.id == other.id
    assert state(stub, objects, other.id) == before
    for name in ("ds-flowers", "ds-706f6d5a-v2", "DS-706F6D5A", "ds706f6d5a", "ds-1", "ds-beef",
                 "ds-0123456789abcdef"):  # not of that form: ids have exactly 8 hex digits
        assert new_dataset(stub, name).display_name == name


def test_a_name_like_another_tenants_id_stored_before_the_rule_opens_nothing_of_it(
    server, security, stub, objects, digits
):
    """A dataset named like another tenant's id can no longer be created; one stored before
    (inserted into the database here) still reaches only its own tenant's objects."""
    beta = api_grpc.DatasetServiceStub(
        security.channel(f"127.0.0.1:{server.port}", api_key=security.keys.create("beta")[1])
    )
    mine = new_dataset(stub)
    upload(stub, mine.id, digits[:1])
    refused(
        lambda: beta.CreateDataset(api.CreateDatasetRequest(display_name=mine.id)),
        INVALID,
        "display_name",
        "has the form of a dataset id",
    )
    decoy_id = "ds-" + hashlib.sha256(mine.id.encode()).hexdigest()[:8]
    assert server.service.store.insert_dataset("beta", decoy_id, mine.id, "", 0.0)
    key = objects.list_keys(f"datasets/{mine.id}/images/")[0]
    content = json.dumps({"source": f"s3://{objects.bucket}/{key}"}).encode()
    response = beta.ImportManifest(
        api.ImportManifestRequest(dataset_id=decoy_id, manifest_content=content)
    )
    assert response.rejected_count == 1 and "not importable" in response.results[0].reason
    assert beta.GetDataset(api.GetDatasetRequest(dataset_id=mine.id)).dataset.id == decoy_id


# --- 7. the smaller ones ---------------------------------------------------------------


def test_proposed_version_names_stay_within_64_characters(stub, stocked):
    longest = "v" + "9" * 63
    stub.PublishVersion(api.PublishVersionRequest(dataset_id=stocked.id, version_name=longest))
    proposed = stub.PublishVersion(api.PublishVersionRequest(dataset_id=stocked.id)).version
    assert proposed.name == "v2"  # one above v9…9 would be 65 characters: the lowest free number
    names = [
        v.name for v in stub.ListVersions(api.ListVersionsRequest(dataset_id=stocked.id)).versions
    ]
    assert names == ["v1", longest, "v2"]


def test_a_negative_size_bytes_is_rejected_naming_size_bytes(stub, objects, digits):
    ds = new_dataset(stub)
    data = digits[0][2]

    def requests():
        yield api.UploadImagesRequest(dataset_id=ds.id)
        yield api.UploadImagesRequest(header=api.ImageHeader(file_name="a.png", size_bytes=-1))
        yield api.UploadImagesRequest(chunk=data)
        yield api.UploadImagesRequest(
            header=api.ImageHeader(file_name="b.png", size_bytes=len(digits[1][2]))
        )
        yield api.UploadImagesRequest(chunk=digits[1][2])

    response = stub.UploadImages(requests())
    assert [r.status for r in response.results] == [REJECTED, STORED]
    assert response.results[0].reason == (
        "size_bytes is -1; give the file's size in bytes, or 0 when it is not known"
    )
    assert objects.list_keys(image_key(ds.id, sha(data))) == []


@pytest.fixture
def labeled(stub, digits):
    """A fresh dataset of 3 labeled digits; its image ids."""
    ds = new_dataset(stub)
    response = upload(stub, ds.id, digits[:3])
    return ds, [r.image_id for r in response.results]


def labels(stub, dataset_id: str) -> dict[str, str]:
    return {
        i.id: i.label
        for i in stub.ListImages(
            api.ListImagesRequest(dataset_id=dataset_id, page_size=1000)
        ).images
    }


@pytest.mark.parametrize(
    ("image_id", "words"),
    [
        ("", ["is required"]),
        ("F" * 64, ["is not an image id", "64 lowercase hex digits"]),
        ("abc", ["'abc' is not an image id"]),
    ],
)
def test_set_labels_with_an_empty_or_malformed_image_id_is_invalid_argument(
    stub, labeled, image_id, words
):
    ds, ids = labeled
    before = labels(stub, ds.id)
    refused(
        lambda: stub.SetLabels(
            api.SetLabelsRequest(
                dataset_id=ds.id,
                assignments=[
                    api.LabelAssignment(image_id=ids[0], label="fine"),
                    api.LabelAssignment(image_id=image_id, label="x"),
                ],
            )
        ),
        INVALID,
        "assignments[1].image_id",
        *words,
    )
    assert labels(stub, ds.id) == before


def test_set_labels_counts_an_image_named_twice_with_one_label_once(stub, labeled):
    ds, ids = labeled
    changed = stub.SetLabels(
        api.SetLabelsRequest(
            dataset_id=ds.id,
            assignments=[
                api.LabelAssignment(image_id=ids[0], label="same"),
                api.LabelAssignment(image_id=ids[1], label="other"),
                api.LabelAssignment(image_id=ids[0], label="same"),
            ],
        )
    ).changed_count
    assert changed == 2
    assert labels(stub, ds.id)[ids[0]] == "same"


def test_set_labels_naming_an_image_with_two_labels_is_refused_naming_both_positions(stub, labeled):
    ds, ids = labeled
    before = labels(stub, ds.id)
    refused(
        lambda: stub.SetLabels(
            api.SetLabelsRequest(
                dataset_id=ds.id,
                assignments=[
                    api.LabelAssignment(image_id=ids[0], label="a"),
                    api.LabelAssignment(image_id=ids[1], label="b"),
                    api.LabelAssignment(image_id=ids[0], label="c"),
                ],
            )
        ),
        INVALID,
        "assignments[2].label",
        f"image {ids[0]} is given 'c' here and 'a' at assignments[0]",
    )
    assert labels(stub, ds.id) == before


INVISIBLE = {
    "a lone combining mark": "\u0301",
    "Hangul jungseong filler": "\u1160",
    "Hangul filler": "\u3164",
    "Hangul choseong filler": "\u115f",
    "halfwidth Hangul filler": "\uffa0",
    "a filler after a letter": "cat\u3164",
}


@pytest.mark.parametrize("label", list(INVISIBLE.values()), ids=list(INVISIBLE))
def test_a_label_that_shows_nothing_or_hides_a_filler_is_refused_everywhere(
    stub, objects, labeled, digits, label
):
    ds, ids = labeled
    before = state(stub, objects, ds.id)
    refused(
        lambda: stub.SetLabels(
            api.SetLabelsRequest(
                dataset_id=ds.id, assignments=[api.LabelAssignment(image_id=ids[0], label=label)]
            )
        ),
        INVALID,
        "assignments[0].label",
    )
    refused(
        lambda: stub.RenameClass(
            api.RenameClassRequest(dataset_id=ds.id, label=digits[0][1], new_label=label)
        ),
        INVALID,
        "new_label",
    )
    refused(
        lambda: stub.ListImages(api.ListImagesRequest(dataset_id=ds.id, label=label)),
        INVALID,
        "label",
    )
    response = upload(stub, ds.id, [("new.png", label, digits[5][2])])
    assert response.results[0].status == REJECTED
    assert response.results[0].reason.startswith("bad label: ") and "label: label" not in response.results[0].reason
    assert state(stub, objects, ds.id) == before


@pytest.mark.parametrize(
    ("description", "shown_as"),
    [
        ("null\x00byte", "'\\x00' (U+0000)"),
        ("\x1b[31mred\x1b[0m", "'\\x1b' (U+001B)"),
        ("carriage\rreturn", "'\\r' (U+000D)"),
        ("next\x85line", "'\\x85' (U+0085)"),
    ],
)
def test_a_description_with_a_control_character_is_refused(stub, description, shown_as):
    name = "desc-" + hashlib.sha256(description.encode()).hexdigest()[:8]
    refused(
        lambda: stub.CreateDataset(
            api.CreateDatasetRequest(display_name=name, description=description)
        ),
        INVALID,
        "description",
        f"contains the control character(s) {shown_as}",
        "only line breaks (\\n) and tabs (\\t) are allowed",
    )
    assert new_dataset(stub, name).display_name == name  # nothing was created: the name is free


def test_a_description_may_hold_line_breaks_and_tabs(stub):
    text = "first line\nsecond line\twith a tab"
    created = stub.CreateDataset(
        api.CreateDatasetRequest(display_name="desc-lines", description=text)
    ).dataset
    assert stub.GetDataset(api.GetDatasetRequest(dataset_id=created.id)).dataset.description == text


@pytest.mark.parametrize("label", ["\x00", "cat/dog", " cat", "x" * 65])
def test_list_images_with_an_invalid_label_filter_is_invalid_argument(stub, labeled, label):
    ds, _ = labeled
    refused(
        lambda: stub.ListImages(api.ListImagesRequest(dataset_id=ds.id, label=label)),
        INVALID,
        "label",
    )


def test_a_label_stored_before_todays_rules_can_still_be_listed(server, stub, labeled):
    """Labels stored by an earlier release may break today's rules; the filter still finds them,
    and a label no image has is still refused."""
    ds, ids = labeled
    old = "\u3164cat"  # a Hangul filler: refused by the label rules today
    assert server.service.store.set_labels(ds.id, [(ids[0], old)], 0.0) == 1
    listed = stub.ListImages(api.ListImagesRequest(dataset_id=ds.id, label=old)).images
    assert [i.id for i in listed] == [ids[0]]
    refused(
        lambda: stub.ListImages(api.ListImagesRequest(dataset_id=ds.id, label="\u3164dog")),
        INVALID,
        "label",
    )
