"""Bad inputs to the dataset service's upload and label RPCs: each one's status code and message.

A real gRPC server (configured from the environment, with small image limits) and a
real S3 server. Every bad input is checked for what it answers and for what it leaves
behind: no image row and no object for a rejected file, no label changed by a refused
call.
"""

from __future__ import annotations

import hashlib
import io
import struct
import time
import zlib

import grpc
import pytest
from PIL import Image

from tests.integration import dataset_calls
from tests.integration.dataset_calls import new_dataset
from tests.integration.rpc_errors import bad_fields, error
from trainyard.dataset.v1 import dataset_pb2
from trainyard.dataset.v1 import dataset_service_pb2 as api
from trainyard.dataset.v1 import dataset_service_pb2_grpc as api_grpc
from trainyard.sample_data import digit_files
from trainyard.services.dataset.server import DatasetConfig, build
from trainyard.services.dataset.service import MAX_LABEL_ASSIGNMENTS, image_key

MAX_IMAGE_BYTES = 100_000
MAX_IMAGE_PIXELS = 40_000
STORED, REJECTED = dataset_pb2.UPLOAD_STATUS_STORED, dataset_pb2.UPLOAD_STATUS_REJECTED


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_config, security):
    """A dataset service whose limits come from the environment, as in production."""
    config = DatasetConfig.from_env({
        "TRAINYARD_DATASET_LISTEN": "127.0.0.1:0",
        "TRAINYARD_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "TRAINYARD_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "TRAINYARD_MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS),
        **s3_config.to_env(),
        **security.env,
    })
    assert (config.limits.max_image_bytes, config.limits.max_image_pixels) == (MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS)
    running, service = build(config)
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def stub(server, security):
    return api_grpc.DatasetServiceStub(security.channel(f"127.0.0.1:{server.port}"))


# --- helpers ----------------------------------------------------------------------


def upload(stub, dataset_id: str, files, chunk: int = 16 * 1024) -> api.UploadImagesResponse:
    """One UploadImages stream, sent as the SDK sends it: a header with the size, then chunks."""
    return dataset_calls.upload(stub, dataset_id, files, chunk, declare_size=True)


def encode(fmt: str, size=(32, 32), seed: int = 0, *, noise: bool = True) -> bytes:
    """An image of random (incompressible) pixels, different for each seed; or of one colour."""
    if noise:
        image = Image.frombytes("RGB", size, hashlib.shake_256(f"{fmt}-{size}-{seed}".encode()).digest(size[0] * size[1] * 3))
    else:
        image = Image.new("RGB", size, (seed % 256, 90, 160))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_with_idat(data: bytes, transform) -> bytes:
    """The PNG with its first IDAT chunk's (payload, crc) replaced by transform(payload, crc)."""
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4:at])[0]
    payload, crc = data[at + 4:at + 4 + length], data[at + 4 + length:at + 8 + length]
    payload, crc = transform(payload, crc)
    return data[:at + 4] + payload + crc + data[at + 8 + length:]


def bad_crc(data: bytes) -> bytes:
    """A PNG whose IDAT checksum is wrong (the pixels are intact)."""
    return png_with_idat(data, lambda payload, crc: (payload, bytes([crc[0] ^ 0xFF]) + crc[1:]))


def garbage_idat(data: bytes) -> bytes:
    """A PNG whose IDAT holds random bytes under a correct checksum: only decoding finds it."""
    def transform(payload, _):
        junk = hashlib.shake_256(b"junk").digest(len(payload))
        return junk, struct.pack(">I", zlib.crc32(b"IDAT" + junk))

    return png_with_idat(data, transform)


def truncated_jpeg() -> bytes:
    """A JPEG cut in the middle of its entropy-coded data (after the headers)."""
    data = encode("JPEG", (64, 64), seed=1)
    cut = len(data) // 2
    assert data.index(b"\xff\xda") < cut - 100  # the start-of-scan header arrived whole
    return data[:cut]


def labels(stub, dataset_id: str) -> dict[str, str]:
    """image id → label of every image of the dataset."""
    images = stub.ListImages(api.ListImagesRequest(dataset_id=dataset_id, page_size=1000)).images
    return {i.id: i.label for i in images}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- uploads: every kind of bad file in one stream ------------------------------------


def test_one_stream_stores_the_good_files_and_rejects_each_bad_kind_with_its_reason(stub, objects):
    png = encode("PNG", seed=2)
    too_many_bytes = encode("BMP", (190, 190))  # a valid image; 190 × 190 = 36,100 pixels
    too_many_pixels = encode("PNG", (300, 200), noise=False)  # a valid image; 300 × 200 = 60,000 pixels
    assert len(too_many_bytes) > MAX_IMAGE_BYTES and len(too_many_pixels) < MAX_IMAGE_BYTES
    # (file name, label, bytes, stored?, words the reason must hold)
    cases = [
        ("good.jpg", "cat", encode("JPEG", seed=3), True, []),
        ("anim.gif", "cat", encode("GIF"), False, ["GIF images are not accepted", "JPEG, PNG, BMP or WebP"]),
        ("scan.tiff", "cat", encode("TIFF"), False, ["TIFF images are not accepted", "JPEG, PNG, BMP or WebP"]),
        ("cut.jpg", "cat", truncated_jpeg(), False, ["JPEG image data is truncated or corrupt"]),
        ("bad-crc.png", "cat", bad_crc(encode("PNG", seed=4)), False, ["PNG image data is truncated or corrupt"]),
        ("bad-idat.png", "cat", garbage_idat(encode("PNG", seed=5)), False, ["PNG image data is truncated or corrupt"]),
        ("empty.png", "cat", b"", False, ["the file is empty"]),
        ("noise.jpg", "cat", hashlib.shake_256(b"noise").digest(4000), False,
         ["not an image in an accepted format", "JPEG, PNG, BMP or WebP"]),
        ("huge.bmp", "cat", too_many_bytes, False,
         [f"the file is {len(too_many_bytes):,} bytes", "the limit is 100,000 bytes", "TRAINYARD_MAX_IMAGE_BYTES"]),
        ("wide.png", "cat", too_many_pixels, False,
         ["300 × 200 = 60,000 pixels", "the limit is 40,000 pixels", "TRAINYARD_MAX_IMAGE_PIXELS"]),
        ("long-label.png", "x" * 65, encode("PNG", seed=6), False,
         ["bad label", "65 characters long", "at most 64"]),
        ("slash-label.png", "cat/dog", encode("PNG", seed=7), False,
         ["bad label", "'/' (U+002F)", "only letters, digits, spaces, '_', '-' and '.'"]),
        ("good.png", "dog", png, True, []),
        ("good.bmp", "", encode("BMP", seed=8), True, []),
        ("good.webp", "dog", encode("WEBP", seed=9), True, []),
    ]
    ds = new_dataset(stub)
    response = upload(stub, ds.id, [(name, label, data) for name, label, data, _, _ in cases])

    assert [r.file_name for r in response.results] == [name for name, *_ in cases]
    for (name, _, data, stored, words), result in zip(cases, response.results, strict=True):
        if stored:
            assert (result.status, result.image_id, result.reason) == (STORED, sha(data), ""), name
        else:
            assert (result.status, result.image_id) == (REJECTED, ""), name
            assert all(word in result.reason for word in words), (name, result.reason)
    good = {sha(data): (name, label) for name, label, data, stored, _ in cases if stored}
    assert (response.stored_count, response.duplicate_count, response.rejected_count) == (len(good), 0, len(cases) - len(good))

    # Only the good files have a row, and an object; a rejected file leaves neither.
    listed = stub.ListImages(api.ListImagesRequest(dataset_id=ds.id, page_size=1000)).images
    assert {i.id: (i.file_name, i.label) for i in listed} == good
    assert {i.file_name: (i.format, i.width, i.height) for i in listed} == {
        "good.jpg": ("JPEG", 32, 32), "good.png": ("PNG", 32, 32), "good.bmp": ("BMP", 32, 32), "good.webp": ("WEBP", 32, 32)}
    assert objects.list_keys(f"datasets/{ds.id}/images/") == sorted(image_key(ds.id, i) for i in good)
    for name, _, data, stored, _ in cases:
        if not stored and data:
            assert objects.list_keys(f"datasets/{ds.id}/images/{sha(data)[:2]}/{sha(data)}") == [], name
    dataset = stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.id)).dataset
    assert (dataset.image_count, dataset.labeled_image_count) == (4, 3)


def test_limits_are_inclusive(stub):
    """An image of exactly the pixel limit, and a file of exactly the byte limit, are stored."""
    at_pixels = encode("PNG", (200, 200), noise=False)  # 40,000 pixels
    side = 182  # a BMP row of 182 × 3 = 546 bytes is padded to 548: 54 + 182 × 548 = 99,790 bytes
    at_bytes = encode("BMP", (side, side))
    at_bytes += b"\0" * (MAX_IMAGE_BYTES - len(at_bytes))  # Pillow ignores bytes after the pixel data
    assert len(at_bytes) == MAX_IMAGE_BYTES
    over_bytes = at_bytes + b"\0"
    ds = new_dataset(stub)
    response = upload(stub, ds.id, [("pixels.png", "a", at_pixels), ("bytes.bmp", "a", at_bytes), ("over.bmp", "a", over_bytes)])
    assert [r.status for r in response.results] == [STORED, STORED, REJECTED], response.results
    assert "the limit is 100,000 bytes" in response.results[2].reason


# --- ListImages -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed_dataset(stub):
    """30 digits labeled "0" to "9" (3 each) and 4 unlabeled images."""
    ds = new_dataset(stub)
    files = digit_files(per_class=3) + [(f"u{i}.png", "", encode("PNG", seed=100 + i)) for i in range(4)]
    assert upload(stub, ds.id, files).stored_count == 34
    return ds


@pytest.mark.parametrize("page_size", [1, 7, 17, 33, 34])
def test_list_images_pages_cover_every_image_exactly_once(stub, listed_dataset, page_size):
    every = stub.ListImages(api.ListImagesRequest(dataset_id=listed_dataset.id, page_size=1000)).images
    assert len(every) == 34
    seen, token, pages = [], "", 0
    while True:
        page = stub.ListImages(api.ListImagesRequest(dataset_id=listed_dataset.id, page_size=page_size, page_token=token))
        assert len(page.images) <= page_size
        seen += [i.id for i in page.images]
        pages += 1
        token = page.next_page_token
        if not token:
            break
        assert pages <= 34, "the pages never end"
    assert sorted(seen) == sorted(i.id for i in every) and len(seen) == len(set(seen))
    assert pages in (-(-34 // page_size), -(-34 // page_size) + 1)  # a last empty page when the count divides


def test_list_images_filters_by_label_and_by_unlabeled_only(stub, listed_dataset):
    by_label = {}
    for label in [str(d) for d in range(10)]:
        got, token = [], ""
        while True:  # pages of a filtered list stay within the filter
            page = stub.ListImages(api.ListImagesRequest(dataset_id=listed_dataset.id, label=label, page_size=2, page_token=token))
            got += list(page.images)
            token = page.next_page_token
            if not token:
                break
        assert len(got) == 3 and {i.label for i in got} == {label}
        by_label[label] = {i.id for i in got}
    unlabeled = stub.ListImages(api.ListImagesRequest(dataset_id=listed_dataset.id, unlabeled_only=True)).images
    assert sorted(i.file_name for i in unlabeled) == ["u0.png", "u1.png", "u2.png", "u3.png"]
    assert all(i.label == "" for i in unlabeled)
    assert set().union(*by_label.values()) | {i.id for i in unlabeled} == set(labels(stub, listed_dataset.id))
    assert list(stub.ListImages(api.ListImagesRequest(dataset_id=listed_dataset.id, label="nope")).images) == []


def test_list_images_with_label_and_unlabeled_only_is_invalid_argument(stub, listed_dataset):
    exc = error(lambda: stub.ListImages(api.ListImagesRequest(dataset_id=listed_dataset.id, label="3", unlabeled_only=True)))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.details() == "label: must be empty when unlabeled_only is set"
    assert bad_fields(exc) == ["label"]


@pytest.mark.parametrize(("request_fields", "field"), [
    ({"page_token": "not-a-token"}, "page_token"),
    ({"page_size": -1}, "page_size"),
    ({"page_size": 1001}, "page_size"),
])
def test_list_images_bad_paging_is_invalid_argument(stub, listed_dataset, request_fields, field):
    exc = error(lambda: stub.ListImages(api.ListImagesRequest(dataset_id=listed_dataset.id, **request_fields)))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and exc.details().startswith(f"{field}: ")
    assert bad_fields(exc) == [field]


# --- SetLabels --------------------------------------------------------------------------


@pytest.fixture
def labeled(stub):
    """A fresh trainable dataset: 6 digits of each class; its image ids in upload order."""
    ds = new_dataset(stub)
    files = digit_files(per_class=6)
    response = upload(stub, ds.id, files)
    assert response.stored_count == 60
    return ds, [r.image_id for r in response.results], files


@pytest.mark.parametrize(("label", "words"), [
    ("x" * 65, ["is 65 characters long; at most 64 are allowed"]),
    ("cat/dog", ["'/' (U+002F)", "only letters, digits, spaces, '_', '-' and '.'"]),
    ("tab\there", ["'\\t' (U+0009)"]),
    (" cat", ["must not start or end with a space"]),
    ("..", ["must not be '..'"]),
])
def test_set_labels_with_a_bad_label_names_its_position_and_changes_nothing(stub, labeled, label, words):
    ds, ids, _ = labeled
    before = labels(stub, ds.id)
    exc = error(lambda: stub.SetLabels(api.SetLabelsRequest(dataset_id=ds.id, assignments=[
        api.LabelAssignment(image_id=ids[0], label="fine"),
        api.LabelAssignment(image_id=ids[1], label="also fine"),
        api.LabelAssignment(image_id=ids[2], label=label)])))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.details().startswith("assignments[2].label: ") and "label: label" not in exc.details()
    assert all(word in exc.details() for word in words), exc.details()
    assert bad_fields(exc) == ["assignments[2].label"]
    assert labels(stub, ds.id) == before


def test_set_labels_accepts_a_label_of_64_characters_in_any_script(stub, labeled):
    ds, ids, _ = labeled
    longest, other_script = "x" * 64, "chat noir_été-2.0 猫"
    changed = stub.SetLabels(api.SetLabelsRequest(dataset_id=ds.id, assignments=[
        api.LabelAssignment(image_id=ids[0], label=longest), api.LabelAssignment(image_id=ids[1], label=other_script)]))
    assert changed.changed_count == 2
    after = labels(stub, ds.id)
    assert (after[ids[0]], after[ids[1]]) == (longest, other_script)


def test_set_labels_over_the_assignment_cap_is_invalid_argument_and_changes_nothing(stub, labeled):
    ds, ids, _ = labeled
    before = labels(stub, ds.id)
    over = [api.LabelAssignment(image_id=ids[i % len(ids)], label="many") for i in range(MAX_LABEL_ASSIGNMENTS + 1)]
    exc = error(lambda: stub.SetLabels(api.SetLabelsRequest(dataset_id=ds.id, assignments=over)))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.details() == f"assignments: {MAX_LABEL_ASSIGNMENTS + 1} changes; at most {MAX_LABEL_ASSIGNMENTS} per call"
    assert bad_fields(exc) == ["assignments"]
    assert labels(stub, ds.id) == before
    # exactly the cap is accepted (each of the 60 images changes once, however often it is named)
    at_cap = stub.SetLabels(api.SetLabelsRequest(dataset_id=ds.id, assignments=over[:MAX_LABEL_ASSIGNMENTS]))
    assert at_cap.changed_count == 60
    assert set(labels(stub, ds.id).values()) == {"many"}


def test_set_labels_of_an_unknown_image_is_not_found_and_changes_nothing(stub, labeled):
    ds, ids, _ = labeled
    before = labels(stub, ds.id)
    unknown = "f" * 64
    exc = error(lambda: stub.SetLabels(api.SetLabelsRequest(dataset_id=ds.id, assignments=[
        api.LabelAssignment(image_id=ids[0], label="fine"), api.LabelAssignment(image_id=unknown, label="x")])))
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    assert exc.details() == f"dataset {ds.display_name!r} has no image {unknown}"
    assert labels(stub, ds.id) == before


def test_removing_a_label_makes_the_image_unlabeled_and_takes_it_out_of_later_versions(stub, labeled, objects):
    ds, ids, files = labeled
    v1 = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id)).version
    removed = ids[0]
    assert files[0][1] == "0"
    changed = stub.SetLabels(api.SetLabelsRequest(dataset_id=ds.id, assignments=[api.LabelAssignment(image_id=removed, label="")]))
    assert changed.changed_count == 1
    assert labels(stub, ds.id)[removed] == ""
    unlabeled = stub.ListImages(api.ListImagesRequest(dataset_id=ds.id, unlabeled_only=True)).images
    assert [i.id for i in unlabeled] == [removed]
    assert removed not in {i.id for i in stub.ListImages(api.ListImagesRequest(dataset_id=ds.id, label="0")).images}
    dataset = stub.GetDataset(api.GetDatasetRequest(dataset_id=ds.id)).dataset
    assert (dataset.image_count, dataset.labeled_image_count) == (60, 59)
    report = stub.CheckTrainability(api.CheckTrainabilityRequest(dataset_id=ds.id)).report
    assert report.unlabeled_image_count == 1 and {c.label: c.image_count for c in report.classes}["0"] == 5

    v2 = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id)).version
    assert v2.train_count + v2.validation_count == 59
    assert {c.label: c.train_count + c.validation_count for c in v2.classes}["0"] == 5
    assert removed not in objects.get_bytes(v2.manifest_key).decode()
    assert removed in objects.get_bytes(v1.manifest_key).decode()  # a published version never changes
    again = stub.GetVersion(api.GetVersionRequest(dataset_id=ds.id, version_name=v1.name)).version
    assert (again.content_hash, again.train_count + again.validation_count) == (v1.content_hash, 60)
    diff = stub.DiffVersions(api.DiffVersionsRequest(dataset_id=ds.id, base_version=v1.name, target_version=v2.name))
    assert list(diff.removed_image_ids) == [removed] and not diff.added_image_ids and not diff.relabeled
    assert [(c.label, c.base_count, c.target_count) for c in diff.class_changes] == [("0", 6, 5)]


# --- RenameClass ------------------------------------------------------------------------


def test_rename_of_a_missing_class_is_not_found(stub, labeled):
    ds, _, _ = labeled
    before = labels(stub, ds.id)
    exc = error(lambda: stub.RenameClass(api.RenameClassRequest(dataset_id=ds.id, label="nope", new_label="yes")))
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    assert exc.details() == f"no image of dataset {ds.display_name!r} is labeled 'nope'"
    assert labels(stub, ds.id) == before


@pytest.mark.parametrize(("new_label", "words"), [
    ("x" * 65, ["is 65 characters long; at most 64 are allowed"]),
    ("cat/dog", ["'/' (U+002F)"]),
    ("", ["is empty"]),
    ("trailing ", ["must not start or end with a space"]),
])
def test_rename_to_a_bad_label_is_invalid_argument_naming_new_label(stub, labeled, new_label, words):
    ds, _, _ = labeled
    before = labels(stub, ds.id)
    exc = error(lambda: stub.RenameClass(api.RenameClassRequest(dataset_id=ds.id, label="3", new_label=new_label)))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.details().startswith("new_label: ") and all(word in exc.details() for word in words), exc.details()
    assert bad_fields(exc) == ["new_label"]
    assert labels(stub, ds.id) == before


def test_rename_without_a_label_is_invalid_argument_naming_label(stub, labeled):
    ds, _, _ = labeled
    exc = error(lambda: stub.RenameClass(api.RenameClassRequest(dataset_id=ds.id, label="", new_label="x")))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.details() == "label: is required" and bad_fields(exc) == ["label"]


def test_rename_merges_into_an_existing_class(stub, labeled):
    ds, _, _ = labeled
    assert stub.RenameClass(api.RenameClassRequest(dataset_id=ds.id, label="3", new_label="8")).changed_count == 6
    counts = {c.label: c.image_count for c in stub.CheckTrainability(api.CheckTrainabilityRequest(dataset_id=ds.id)).report.classes}
    assert "3" not in counts and counts["8"] == 12


def test_rename_to_the_same_name_changes_no_label_and_no_version_content(stub, labeled):
    """Renaming a class to itself keeps the label times, so a version published after it has the same bytes."""
    ds, _, _ = labeled
    v1 = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id)).version
    before = labels(stub, ds.id)
    time.sleep(1.1)  # label times are written to the second
    stub.RenameClass(api.RenameClassRequest(dataset_id=ds.id, label="3", new_label="3"))
    assert labels(stub, ds.id) == before
    v2 = stub.PublishVersion(api.PublishVersionRequest(dataset_id=ds.id)).version
    assert v2.parent_version == v1.name
    assert v2.content_hash == v1.content_hash


def test_a_label_sent_in_decomposed_unicode_finds_the_class_stored_in_nfc(stub):
    """"été" typed as e + U+0301 (NFD) names the class stored as "été" (NFC) in filters and renames."""
    ds = new_dataset(stub)
    upload(stub, ds.id, [("a.png", "\u00e9t\u00e9", encode("PNG", seed=21))])
    decomposed = "e\u0301te\u0301"
    listed = stub.ListImages(api.ListImagesRequest(dataset_id=ds.id, label=decomposed)).images
    assert [i.label for i in listed] == ["\u00e9t\u00e9"]
    assert stub.RenameClass(api.RenameClassRequest(dataset_id=ds.id, label=decomposed, new_label="summer")).changed_count == 1
    assert set(labels(stub, ds.id).values()) == {"summer"}
