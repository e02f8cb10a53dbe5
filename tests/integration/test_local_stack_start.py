"""Starting the local stack when something is in the way: a port another server holds, a
stack running (or stopping) from the same data directory, an S3 store whose lock is held.
Each failure is one clear StackError, and nothing is left running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from trainyard.stack import s3 as s3_module
from trainyard.stack.local import LocalStack, StackError, StackSettings
from trainyard.stack.s3 import S3Server, S3ServerError


@pytest.fixture
def other_server():
    """Another program's gRPC server answering health checks with SERVING (another stack's, say)."""
    server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.so_reuseport", 0)])
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path, other_server):
    stack = LocalStack(StackSettings(data_dir=tmp_path, scheduler_port=other_server))
    with pytest.raises(StackError) as exc:
        stack.start()
    assert f"port {other_server} (scheduler service) on 127.0.0.1 already in use" in exc.value.summary
    assert "TRAINYARD_SCHEDULER_PORT" in exc.value.summary
    assert not stack.s3.running and stack.processes == {}
    assert not (tmp_path / "stack.json").exists()


def test_health_from_another_server_on_the_port_is_not_taken_for_our_service(tmp_path, other_server):
    """Our process (here one that never listens and then exits) is what must answer, not whoever holds the port."""
    stack = LocalStack(StackSettings(data_dir=tmp_path, dataset_port=other_server))
    stack.processes["dataset"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5); raise SystemExit(1)"])
    started = time.monotonic()
    with pytest.raises(StackError) as exc:
        stack.wait_healthy("dataset", timeout=20)
    assert "the dataset service exited with status 1" in exc.value.summary
    assert time.monotonic() - started >= 1.0  # it waited for our process instead of taking the other's SERVING


def test_a_stack_running_from_the_same_data_directory_is_refused(tmp_path, other_server):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # its process runs and its dataset service's port is taken
        (tmp_path / "stack.json").write_text(json.dumps({"pid": other.pid, "dataset": f"127.0.0.1:{other_server}"}))
        stack = LocalStack(StackSettings(data_dir=tmp_path))
        with pytest.raises(StackError) as exc:
            stack.start()
        assert f"a stack is already running from {tmp_path} (process {other.pid}" in exc.value.summary
        assert not stack.s3.running and json.loads((tmp_path / "stack.json").read_text())["pid"] == other.pid
    finally:
        other.kill()
        other.wait()


def test_a_stack_stopping_in_the_same_data_directory_is_waited_for(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    (tmp_path / "stack.json").write_text(json.dumps({"pid": other.pid, "stopping": True}))
    started = time.monotonic()
    LocalStack(StackSettings(data_dir=tmp_path))._check_data_dir_free()
    assert other.poll() is not None and time.monotonic() - started >= 1.0
    (tmp_path / "stack.json").write_text(json.dumps({"pid": other.pid}))  # a stack that is gone does not count
    LocalStack(StackSettings(data_dir=tmp_path))._check_data_dir_free()


def test_port_settings_that_are_no_numbers_are_named():
    with pytest.raises(StackError) as exc:
        StackSettings.from_env({"TRAINYARD_DATASET_PORT": "5005l"})
    assert "TRAINYARD_DATASET_PORT='5005l'" in exc.value.summary
    with pytest.raises(StackError):
        StackSettings.from_env({"TRAINYARD_TRAINER_PORT": "70000"})


def test_an_s3_store_locked_by_another_server_is_waited_for_then_named(tmp_path, monkeypatch):
    if s3_module.resolve_backend()[0] != "weed":
        pytest.skip("the lock check reads weed's log")
    monkeypatch.setattr(s3_module, "_LOCK_WAIT_S", 2.0)
    first = S3Server(tmp_path)
    first.start()
    try:
        second = S3Server(tmp_path)
        with pytest.raises(S3ServerError) as exc:
            second.start(timeout=30)
        assert str(exc.value).splitlines()[0].endswith(
            f"its store in {tmp_path / 'data'} is locked by another S3 server process (another stack using this data directory?)")
        assert not second.running
        # the first one stops while the second waits for the lock: the second starts
        monkeypatch.setattr(s3_module, "_LOCK_WAIT_S", 20.0)
        stopper = threading.Timer(1.0, first.stop)
        stopper.start()
        second.start(timeout=40)
        stopper.join()
        assert second.running
        second.stop()
    finally:
        first.stop()


def test_a_stack_file_whose_pid_now_belongs_to_another_program_does_not_block(tmp_path):
    """After a reboot the recorded pid may run something else; the stack's port is free, so it is gone."""
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "stack.json").write_text(json.dumps({"pid": unrelated.pid, "dataset": f"127.0.0.1:{_free_port()}",
                                                         "children": {"dataset": unrelated.pid}}))
        LocalStack(StackSettings(data_dir=tmp_path))._check_data_dir_free()
        assert not (tmp_path / "stack.json").exists()
        assert unrelated.poll() is None  # not a service of ours: left alone
    finally:
        unrelated.kill()
        unrelated.wait()


def test_the_services_of_a_stack_whose_process_was_killed_are_stopped_by_the_next_start(tmp_path):
    """kill -9 of `dev up` leaves its services running (they have their own sessions); the next
    start stops those still running the program they were started as."""
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner.wait()  # its pid is now free: the stack's process is gone
    sleeper = "import time; time.sleep(60)"
    orphan = subprocess.Popen([sys.executable, "-c", sleeper, "-m", "trainyard.services.dataset.server"])
    stranger = subprocess.Popen([sys.executable, "-c", sleeper])  # a pid reused by another program
    try:
        (tmp_path / "stack.json").write_text(json.dumps({
            "pid": owner.pid, "dataset": "127.0.0.1:1", "children": {"dataset": orphan.pid, "scheduler": stranger.pid}}))
        LocalStack(StackSettings(data_dir=tmp_path))._check_data_dir_free()
        assert orphan.wait(timeout=20) is not None
        assert stranger.poll() is None
        assert not (tmp_path / "stack.json").exists()
    finally:
        for process in (orphan, stranger):
            process.kill()
            process.wait()


def test_dev_up_on_a_taken_port_fails_with_one_line(tmp_path, other_server):
    env = {**os.environ, "TRAINYARD_DATASET_PORT": str(other_server), "TRAINYARD_SCHEDULER_PORT": str(_free_port()),
           "TRAINYARD_TRAINER_PORT": str(_free_port()), "COLUMNS": "300"}
    done = subprocess.run([sys.executable, "-m", "trainyard.cli.main", "dev", "up", "--data-dir", str(tmp_path / "d")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {other_server} (dataset service) on 127.0.0.1 already in use" in done.stdout
    assert "Ready" not in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "d" / "stack.json").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
