"""The demo: the whole suite on a real dataset, from an empty folder to an evaluated model."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from trainyard.cli import display
from trainyard.cli.display import console
from trainyard.cli.main import EXIT_OK, follow
from trainyard.sample_data import write_digits
from trainyard.stack.local import LocalStack, StackSettings


def run_demo(data_dir: Path, max_minutes: int = 60) -> int:
    started = time.monotonic()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    stack = LocalStack(StackSettings(data_dir=data_dir))
    with console.status("starting the local stack (S3 server, dataset, scheduler, trainer)…"):
        stack.start()
    try:
        console.print(f"[bold]1.[/] stack up: dataset {stack.address('dataset')}, scheduler {stack.address('scheduler')}, "
                      f"trainer {stack.address('trainer')}, S3 {stack.s3_config.endpoint}")
        client = stack.client()
        folder = data_dir / "digits"
        count = write_digits(folder)
        console.print(f"[bold]2.[/] wrote scikit-learn's digits as {count} PNG files under {folder}/<digit>/")
        dataset = client.create_dataset("digits", "scikit-learn's handwritten digits, 8×8 grayscale")
        with display.Progress(console=console) as progress:
            task = progress.add_task("importing", total=count)
            client.upload_folder(dataset.id, folder, on_batch=lambda r, done, total: progress.update(task, completed=done))
        report = client.check_trainability(dataset.id)
        console.print(f"[bold]3.[/] imported into dataset {dataset.id}: {sum(report.classes.values())} labeled "
                      f"images in {len(report.classes)} classes; trainable: {report.trainable}")
        flavor = next(f for f in client.list_flavors() if f.id == "free-gpu")
        console.print(f"[bold]4.[/] training with the defaults (ratio 0.8, {max_minutes} min, balance, {flavor.display_name}); "
                      "accepting the free flavor's terms:")
        console.print(f"[dim]{flavor.terms}[/]")
        job = client.create_training_job(dataset.id, accept_free_terms=True, max_duration_minutes=max_minutes)
        console.print(f"    job {job.id} on dataset version {job.parameters.dataset_version}")
        code = follow(client, job.id)
        if code == EXIT_OK:
            mv = client.get_model_version(dataset.id, client.get_job(job.id).model_version)
            console.print(display.confusion_table(mv))
            console.print(f"[bold green]model version {mv.version}[/]: validation accuracy {mv.evaluation.accuracy:.4f}, "
                          f"artifacts at s3://{stack.s3_config.bucket}/{mv.artifact_prefix}")
        console.print(f"demo finished in {time.monotonic() - started:.1f} s")
        return code
    finally:
        with console.status("stopping the stack…"):
            stack.stop()
