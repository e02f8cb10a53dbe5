"""The object store wrapper against a real local S3 server (never a mock)."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from trainyard.errors import NotFound, Unavailable
from trainyard.objectstore import ObjectStore, ObjectStoreAccessDenied
from trainyard.stack.s3 import S3Server, S3ServerError

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def store(s3_server):
    return ObjectStore.from_endpoint(s3_server.endpoint)


@pytest.fixture
def prefix():
    return f"t/{uuid.uuid4().hex}/"


class PatternStream(io.RawIOBase):
    """``size`` deterministic bytes, produced on demand (never all in memory)."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.counter = 0
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.remaining
        n = min(n, self.remaining)
        out = bytearray()
        while len(out) < n:
            block = hashlib.sha256(self.counter.to_bytes(8, "big")).digest() * 128  # 4 KiB
            self.counter += 1
            out += block[: n - len(out)]
        self.remaining -= n
        data = bytes(out)
        self.sha.update(data)
        return data


def test_put_get_list_delete_round_trip(store, prefix):
    store.put_bytes(prefix + "a.bin", b"\x00\x01binary", content_type="application/octet-stream")
    store.put_bytes(prefix + "dir/b.txt", b"hello", content_type="text/plain")
    store.put_bytes(prefix + "dir/deeper/c.txt", b"")  # empty objects are objects too
    store.put_json(prefix + "manifest.json", {"b": [1, 2], "a": "\u00e9"})

    assert store.get_bytes(prefix + "a.bin") == b"\x00\x01binary"
    assert store.get_bytes(prefix + "dir/deeper/c.txt") == b""
    assert store.get_json(prefix + "manifest.json") == {"a": "\u00e9", "b": [1, 2]}
    assert store.get_bytes(prefix + "manifest.json") == '{"a":"\u00e9","b":[1,2]}'.encode()
    assert store.exists(prefix + "dir/b.txt")
    assert store.size(prefix + "dir/b.txt") == 5
    assert store.list_keys(prefix) == [
        prefix + "a.bin",
        prefix + "dir/b.txt",
        prefix + "dir/deeper/c.txt",
        prefix + "manifest.json",
    ]
    assert store.list_keys(prefix + "dir/") == [prefix + "dir/b.txt", prefix + "dir/deeper/c.txt"]

    store.put_bytes(prefix + "a.bin", b"replaced")
    assert store.get_bytes(prefix + "a.bin") == b"replaced"

    store.delete(prefix + "dir/b.txt")
    assert not store.exists(prefix + "dir/b.txt")
    assert store.list_keys(prefix + "dir/") == [prefix + "dir/deeper/c.txt"]
    store.delete(prefix + "dir/b.txt")  # deleting twice is fine, as in S3


def test_json_written_is_strict_with_nan_and_infinity_as_null(store, prefix):
    """metrics.json and friends are read by other tools: no bare NaN or Infinity tokens."""
    store.put_json(prefix + "metrics.json", {"loss": float("nan"), "curve": [1.0, float("inf"), -float("inf")]})
    assert store.get_bytes(prefix + "metrics.json") == b'{"curve":[1.0,null,null],"loss":null}'


def test_large_object_via_put_stream(store, prefix, tmp_path):
    size = 20 * MiB
    stream = PatternStream(size)
    store.put_stream(prefix + "big.bin", stream, size)
    assert store.size(prefix + "big.bin") == size
    data = store.get_bytes(prefix + "big.bin")
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == stream.sha.hexdigest()

    # unknown length: multipart with a fixed part size
    stream2 = PatternStream(7 * MiB + 3)
    store.put_stream(prefix + "unknown-length.bin", stream2, -1)
    target = tmp_path / "down.bin"
    store.get_file(prefix + "unknown-length.bin", target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == stream2.sha.hexdigest()

    src = tmp_path / "up.bin"
    src.write_bytes(b"x" * (6 * MiB))
    store.put_file(prefix + "file.bin", src)
    assert store.size(prefix + "file.bin") == 6 * MiB


def test_missing_key_is_not_found(store, prefix):
    with pytest.raises(NotFound, match="not found"):
        store.get_bytes(prefix + "nope")
    with pytest.raises(NotFound):
        store.get_json(prefix + "nope.json")
    with pytest.raises(NotFound):
        store.size(prefix + "nope")
    assert not store.exists(prefix + "nope")
    assert store.list_keys(prefix) == []


def test_missing_bucket_is_not_found(s3_server):
    ep = s3_server.endpoint
    other = ObjectStore(ep.address, ep.credentials.access_key, ep.credentials.secret_key, "no-such-bucket")
    with pytest.raises(NotFound, match="bucket"):
        other.get_bytes("k")
    other.ensure_bucket()
    other.ensure_bucket()  # idempotent
    other.put_bytes("k", b"v")
    assert other.get_bytes("k") == b"v"


@pytest.mark.parametrize("which", ["secret", "access_key"])
def test_wrong_credentials_are_refused(s3_server, store, prefix, which):
    ep = s3_server.endpoint
    access, secret = ep.credentials.access_key, ep.credentials.secret_key
    if which == "secret":
        secret = "wrong-" + secret[::-1]
    else:
        access = "unknown-" + access
    intruder = ObjectStore(ep.address, access, secret, ep.bucket)
    store.put_bytes(prefix + "secret.txt", b"mine")

    for attempt in (
        lambda: intruder.get_bytes(prefix + "secret.txt"),
        lambda: intruder.put_bytes(prefix + "planted.txt", b"theirs"),
        lambda: intruder.list_keys(prefix),
        lambda: intruder.exists(prefix + "secret.txt"),
        lambda: intruder.delete(prefix + "secret.txt"),
    ):
        with pytest.raises(ObjectStoreAccessDenied) as info:
            attempt()
        assert isinstance(info.value, Unavailable)
        assert secret not in str(info.value) and access not in str(info.value)

    assert store.list_keys(prefix) == [prefix + "secret.txt"]
    assert store.get_bytes(prefix + "secret.txt") == b"mine"

    anonymous = ObjectStore(ep.address, "", "", ep.bucket)
    with pytest.raises(ObjectStoreAccessDenied):
        anonymous.get_bytes(prefix + "secret.txt")


def test_put_if_absent(store, prefix):
    key = prefix + "once"
    assert store.put_if_absent(key, b"first") is True
    assert store.put_if_absent(key, b"second") is False
    assert store.get_bytes(key) == b"first"
    assert store.put_if_absent(prefix + "empty", b"") is True
    assert store.get_bytes(prefix + "empty") == b""

    # Concurrent writers: the server's If-None-Match makes exactly one win.
    for i in range(3):
        race_key = f"{prefix}race-{i}"
        barrier = threading.Barrier(8)

        def attempt(n, race_key=race_key, barrier=barrier):
            barrier.wait()
            return store.put_if_absent(race_key, f"writer {n}".encode())

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(attempt, range(8)))
        assert results.count(True) == 1, results
        winner = results.index(True)
        assert store.get_bytes(race_key) == f"writer {winner}".encode()


def test_two_servers_at_once(s3_server, store, tmp_path, prefix):
    with S3Server(tmp_path / "second") as other:
        assert other.endpoint.port != s3_server.endpoint.port
        assert not set(other.ports.values()) & set(s3_server.ports.values())
        assert other.endpoint.credentials != s3_server.endpoint.credentials
        second = ObjectStore.from_endpoint(other.endpoint)
        second.put_bytes(prefix + "k", b"second")
        store.put_bytes(prefix + "k", b"first")
        assert second.get_bytes(prefix + "k") == b"second"
        assert store.get_bytes(prefix + "k") == b"first"
        assert other.data_dir != s3_server.data_dir
    assert not other.running


def test_kill_makes_calls_unavailable_quickly_and_restart_keeps_data(tmp_path):
    server = S3Server(tmp_path / "fault")
    try:
        ep = server.start()
        store = ObjectStore.from_endpoint(ep)
        store.put_bytes("keep/me.txt", b"durable")
        store.put_json("keep/manifest.json", {"v": 1})

        server.kill()
        for call in (
            lambda: store.get_bytes("keep/me.txt"),
            lambda: store.put_bytes("keep/new.txt", b"x"),
            lambda: store.list_keys("keep/"),
            lambda: store.exists("keep/me.txt"),
        ):
            began = time.monotonic()
            with pytest.raises(Unavailable, match="object store unreachable") as info:
                call()
            assert time.monotonic() - began < 10
            message = str(info.value)
            assert ep.credentials.secret_key not in message
            assert ep.credentials.access_key not in message

        assert server.restart() == ep  # same port, same credentials
        # The same client (and its connection pool) works again.
        assert store.get_bytes("keep/me.txt") == b"durable"
        assert store.get_json("keep/manifest.json") == {"v": 1}
        assert store.list_keys("keep/") == ["keep/manifest.json", "keep/me.txt"]
        store.put_bytes("keep/after.txt", b"after")

        server.stop()  # graceful this time
        server.stop()  # idempotent
        assert server.restart() == ep
        assert store.get_bytes("keep/after.txt") == b"after"
    finally:
        server.stop()


def test_unreachable_endpoint_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    store = ObjectStore(f"http://127.0.0.1:{port}", "user", "topsecret-value", "trainyard")
    began = time.monotonic()
    with pytest.raises(Unavailable, match="object store unreachable") as info:
        store.get_bytes("k")
    assert time.monotonic() - began < 10
    assert "topsecret-value" not in str(info.value)


def test_start_on_a_busy_port_is_refused(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = S3Server(tmp_path / "clash", port=port)
        with pytest.raises(S3ServerError, match=f"port {port} .* already in use"):
            server.start(timeout=30)
        assert not server.running


def test_failed_start_reports_log_tail(tmp_path, monkeypatch):
    server = S3Server(tmp_path / "broken")
    command = server._command
    monkeypatch.setattr(server, "_command", lambda: [*command(), "-no-such-flag=1"])
    began = time.monotonic()
    with pytest.raises(S3ServerError, match="failed to start") as info:
        server.start(timeout=30)
    assert time.monotonic() - began < 10
    message = str(info.value)
    assert "last lines of" in message and "no-such-flag" in message
    assert server.endpoint.credentials.secret_key not in message
    assert not server.running
