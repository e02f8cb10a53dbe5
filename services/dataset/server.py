"""Dataset service process: configuration, server factory, main."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainyard import log as logs
from trainyard import metrics
from trainyard.config import S3Config, SecurityConfig, env_float, env_int, env_str
from trainyard.dataset.v1 import dataset_service_pb2, dataset_service_pb2_grpc
from trainyard.objectstore import ObjectStore
from trainyard.rpc import RunningServer, create_server, serve_until_signal
from trainyard.services.dataset.service import DatasetService, Limits
from trainyard.services.dataset.servicer import DatasetServicer
from trainyard.services.dataset.store import DatasetStore

SERVICE_NAME = dataset_service_pb2.DESCRIPTOR.services_by_name["DatasetService"].full_name


@dataclass(frozen=True)
class DatasetConfig:
    listen: str
    data_dir: Path
    s3: S3Config
    limits: Limits
    security: SecurityConfig
    deleted_retention_hours: float = 168.0  # longer than any job may run (6000 minutes)
    metrics_listen: str = ""  # /metrics address; empty: off

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DatasetConfig:
        env = os.environ if env is None else env
        if env_int(env, "TRAINYARD_DATASET_DECODE_PIXELS", Limits.decode_pixels) < 1:
            raise SystemExit("TRAINYARD_DATASET_DECODE_PIXELS must be at least 1 (pixels validated at once)")
        return cls(
            listen=env_str(env, "TRAINYARD_DATASET_LISTEN", "127.0.0.1:50051"),
            data_dir=Path(env_str(env, "TRAINYARD_DATA_DIR", ".trainyard")) / "dataset",
            s3=S3Config.from_env(env),
            limits=Limits(
                max_image_bytes=env_int(env, "TRAINYARD_MAX_IMAGE_BYTES", Limits.max_image_bytes),
                max_image_pixels=env_int(env, "TRAINYARD_MAX_IMAGE_PIXELS", Limits.max_image_pixels),
                max_tenant_bytes=env_int(env, "TRAINYARD_TENANT_MAX_BYTES", Limits.max_tenant_bytes),
                max_dataset_images=env_int(env, "TRAINYARD_DATASET_MAX_IMAGES", Limits.max_dataset_images),
                decode_pixels=env_int(env, "TRAINYARD_DATASET_DECODE_PIXELS", Limits.decode_pixels),
            ),
            security=SecurityConfig.from_env(env),
            deleted_retention_hours=env_float(env, "TRAINYARD_DELETED_RETENTION_HOURS", 168.0),
            metrics_listen=env_str(env, "TRAINYARD_DATASET_METRICS_LISTEN", ""),
        )


def build(config: DatasetConfig) -> tuple[RunningServer, DatasetService]:
    objects = ObjectStore(config.s3.endpoint, config.s3.access_key, config.s3.secret_key, config.s3.bucket, config.s3.secure)
    objects.ensure_bucket()
    service = DatasetService(DatasetStore(config.data_dir / "dataset.db"), objects, config.limits)
    running = create_server(
        config.listen,
        lambda server: dataset_service_pb2_grpc.add_DatasetServiceServicer_to_server(DatasetServicer(service), server),
        [SERVICE_NAME],
        authenticator=config.security.authenticator(),
        tls=config.security.server_tls,
    )
    return running, service


ORPHAN_GRACE_SECONDS = 6 * 3600  # longer than an upload stream takes, even during a rolling restart


def purge_forever(service: DatasetService, retention_hours: float, stop: threading.Event) -> None:
    """Hourly: purge deleted datasets once their retention has passed, and remove orphaned image objects."""
    while not stop.is_set():
        try:
            service.purge_deleted(retention_hours * 3600)
            service.sweep_orphans(ORPHAN_GRACE_SECONDS)
        except Exception:  # the object store may be down; try again next hour
            logs.get_logger(__name__).exception("dataset.purge_failed")
        stop.wait(3600)


def main() -> None:
    logs.configure("dataset")
    config = DatasetConfig.from_env()
    running, service = build(config)
    metrics.serve(config.metrics_listen)
    logs.get_logger(__name__).info("dataset.listening", port=running.port, listen=config.listen)
    stop = threading.Event()
    threading.Thread(target=purge_forever, args=(service, config.deleted_retention_hours, stop), daemon=True).start()
    serve_until_signal(running, on_stop=stop.set)


if __name__ == "__main__":
    main()
