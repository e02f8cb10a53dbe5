"""The Python SDK, the CLI and the services' own calls to each other on a mutual-TLS stack."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainyard.errors import Unavailable
from trainyard.sample_data import digit_files
from trainyard.sdk import Client, Connection
from trainyard.tls import ClientTls

pytestmark = pytest.mark.e2e


def test_sdk_finds_key_and_certificates_of_the_stack_and_services_call_each_other_over_mtls(mtls_stack, monkeypatch):
    for name in [n for n in os.environ if n.startswith("TRAINYARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TRAINYARD_DATA_DIR", str(mtls_stack.data_dir))
    connection = Connection.from_env()
    assert connection.api_key == mtls_stack.api_key and connection.tls is not None and connection.tls.cert_chain
    client = Client()
    ds = client.create_dataset("over-mtls")
    assert client.upload_images(ds.id, digit_files(per_class=6)).stored == 60
    # creating a job makes the scheduler call the dataset service (S1 check, publish) over mTLS
    job = client.create_training_job(ds.id, accept_free_terms=True)
    assert job.state == "queued" and len(client.list_versions(ds.id)) == 1


def test_a_client_without_a_certificate_gets_no_answer(mtls_stack):
    c = mtls_stack.certificates
    without_cert = Client(mtls_stack.address("dataset"), mtls_stack.address("scheduler"), api_key=mtls_stack.api_key,
                          tls=ClientTls.from_files(c.ca), retries=0, timeout=5)
    with pytest.raises(Unavailable):
        without_cert.list_datasets()


def test_cli_uses_the_stack_it_finds(mtls_stack):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    done = subprocess.run([sys.executable, "-m", "trainyard.cli.main", "flavors", "--json"], capture_output=True, text=True,
                          env={**env, "TRAINYARD_DATA_DIR": str(mtls_stack.data_dir)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "free-gpu" in done.stdout
