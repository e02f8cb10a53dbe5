"""The Trainyard Python SDK.

    from trainyard.sdk import Client
    client = Client()                      # addresses from the environment or the local stack
    ds = client.create_dataset("flowers")
    client.upload_folder(ds.id, "photos/")  # <label>/<image> files
    job = client.create_training_job(ds.id, accept_free_terms=True)
    for event in client.watch(job.id):
        ...
    print(client.get_model_version(ds.id, client.wait(job.id).model_version).evaluation.accuracy)
"""

from trainyard.sdk import types
from trainyard.sdk.client import Client, Connection, ConnectionSettingsError

__all__ = ["Client", "Connection", "ConnectionSettingsError", "types"]
