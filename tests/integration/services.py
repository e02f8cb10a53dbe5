"""The three services in this process, built through their factories on port 0."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from trainyard.config import S3Config
from trainyard.rpc import RunningServer
from trainyard.services.dataset.server import DatasetConfig
from trainyard.services.dataset.server import build as build_dataset
from trainyard.services.dataset.service import DatasetService, Limits
from trainyard.services.scheduler.server import SchedulerConfig
from trainyard.services.scheduler.server import build as build_scheduler
from trainyard.services.trainer.server import TrainerConfig
from trainyard.services.trainer.server import build as build_trainer


@dataclass
class Services:
    dataset: RunningServer
    scheduler: RunningServer
    trainer: RunningServer
    dataset_service: DatasetService

    def address(self, name: str) -> str:
        return f"127.0.0.1:{getattr(self, name).port}"


@contextmanager
def in_process_services(data: Path, s3_config: S3Config, security) -> Iterator[Services]:
    """Dataset service, scheduler (pointing at it) and a trainer (not registered), all with `security`."""
    dataset, dataset_service = build_dataset(DatasetConfig("127.0.0.1:0", data / "dataset", s3_config, Limits(), security.config))
    scheduler, scheduler_service = build_scheduler(SchedulerConfig.from_env({
        "TRAINYARD_SCHEDULER_LISTEN": "127.0.0.1:0", "TRAINYARD_DATA_DIR": str(data),
        "TRAINYARD_DATASET_ADDRESS": f"127.0.0.1:{dataset.port}", **security.env}))
    trainer, _ = build_trainer(TrainerConfig.from_env({"TRAINYARD_TRAINER_LISTEN": "127.0.0.1:0", **s3_config.to_env(), **security.env}))
    try:
        yield Services(dataset, scheduler, trainer, dataset_service)
    finally:
        scheduler_service.stop()
        for running in (dataset, scheduler, trainer):
            running.stop(0)
