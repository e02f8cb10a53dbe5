"""How the CLI shows things to people: tables, the live job view, evaluations."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from trainyard.sdk import types

console = Console()


def when(epoch_seconds: float) -> str:
    """A moment in local time, as people read it."""
    return datetime.fromtimestamp(epoch_seconds).strftime("%Y-%m-%d %H:%M:%S")


def words(value: str) -> str:
    return value.replace("_", " ")


def plain(value: Any) -> Any:
    """A typed SDK object as JSON-ready data (for --json)."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "proto"}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def print_json(value: Any) -> None:
    console.print_json(json.dumps(plain(value)))


class JobView:
    """Live view of a job: queue position while waiting, then a progress bar."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = None

    def __enter__(self) -> JobView:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def show(self, event: types.JobEvent) -> None:
        say = self.progress.console.print
        if event.kind == "state_change":
            text = f"[cyan]{event.state}[/]"
            if event.stop_reason:
                text += f" ({words(event.stop_reason)})"
            say(text + (f": {event.message}" if event.message else ""))
        elif event.kind == "queue_position":
            say(f"[yellow]queued[/]: position {event.position} ({event.jobs_ahead} ahead) — {event.message}")
        elif event.kind == "log":
            say(f"[dim]{event.message}[/]")
        elif event.kind == "progress" and event.progress:
            p = event.progress
            if self.task is None:
                self.task = self.progress.add_task("training", total=p.steps_total or 1, stats="")
            stats = f"epoch {p.epoch}/{p.epochs_total}  loss {p.loss:.3f}  acc {p.train_accuracy:.3f}"
            if p.validation_accuracy is not None:
                stats += f"  val {p.validation_accuracy:.3f}"
            stats += f"  {p.images_per_second:,.0f} img/s"
            self.progress.update(self.task, completed=p.step, total=p.steps_total or 1, stats=stats)
        elif event.kind == "result" and event.model_version:
            say(f"[green]model version {event.model_version.version}[/]")


def job_table(jobs: list[types.TrainingJob]) -> Table:
    table = Table(title="Training jobs")
    for column in ("job", "dataset", "version", "state", "reason", "flavor", "model", "created"):
        table.add_column(column)
    for j in jobs:
        table.add_row(j.id, j.dataset_id, j.parameters.dataset_version, j.state, words(j.stop_reason),
                      j.parameters.flavor_id, j.model_version,
                      j.create_time.strftime("%Y-%m-%d %H:%M:%S") if j.create_time else "")
    return table


def summary_rows(mv: types.ModelVersion) -> list[tuple[str, str]]:
    """The key figures of a model version, each saying which average it is (S9)."""
    ev = mv.evaluation
    rows = [
        ("accuracy", f"{ev.accuracy:.4f}"),
        ("precision (macro)", f"{ev.macro.precision:.4f}"),
        ("recall (macro)", f"{ev.macro.recall:.4f}"),
        ("F1 (macro)", f"{ev.macro.f1:.4f}"),
        ("precision (weighted)", f"{ev.weighted.precision:.4f}"),
        ("recall (weighted)", f"{ev.weighted.recall:.4f}"),
        ("F1 (weighted)", f"{ev.weighted.f1:.4f}"),
    ]
    if ev.top5_accuracy is not None:
        rows.append(("top-5 accuracy", f"{ev.top5_accuracy:.4f}"))
    rows += [
        ("validation samples", str(ev.validation_samples)),
        ("architecture", mv.architecture),
        ("initialization", mv.initialization),
        ("epochs (best)", f"{mv.epochs_run} ({mv.best_epoch})"),
        ("stop reason", words(mv.stop_reason)),
        ("device", mv.device),
        ("training time", f"{mv.training_time.total_seconds():.1f} s"),
        ("preference", mv.parameters.preference),
        ("train ratio", mv.parameters.train_ratio),
        ("max duration", f"{mv.parameters.max_duration_minutes} min"),
        ("flavor", mv.parameters.flavor_id),
    ]
    return rows


def evaluation_tables(mv: types.ModelVersion) -> list[Table]:
    summary = Table(title=f"Model version {mv.version} — {mv.dataset_id} (dataset version {mv.dataset_version})")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    for name, value in summary_rows(mv):
        summary.add_row(name, value)
    per_class = Table(title="Classification statistics (validation set)")
    for column in ("class", "precision", "recall", "F1", "support", "train", "validation"):
        per_class.add_column(column, justify="right" if column != "class" else "left")
    for c in mv.evaluation.classes:
        per_class.add_row(c.label, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support),
                          str(c.train_count), str(c.validation_count))
    return [summary, per_class]


def confusion_table(mv: types.ModelVersion) -> Table:
    ev = mv.evaluation
    table = Table(title="Confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for label in ev.confusion_labels:
        table.add_column(label, justify="right")
    for i, (label, row) in enumerate(zip(ev.confusion_labels, ev.confusion_matrix, strict=True)):
        table.add_row(label, *[f"[bold green]{v}[/]" if i == j else (f"[red]{v}[/]" if v else "·") for j, v in enumerate(row)])
    return table


def models_table(dataset: str, versions: list[types.ModelVersion], best: str) -> Table:
    """Versions side by side with their key metrics; the best (macro precision) starred."""
    table = Table(title=f"Model versions of {dataset}")
    for column in ("version", "accuracy", "precision (macro)", "recall (macro)", "F1 (macro)", "arch", "preference",
                   "data", "epochs", "stop", "job"):
        table.add_column(column)
    for v in versions:
        e = v.evaluation
        table.add_row(v.version + (" ★" if v.version == best else ""), f"{e.accuracy:.4f}", f"{e.macro.precision:.4f}",
                      f"{e.macro.recall:.4f}", f"{e.macro.f1:.4f}", v.architecture, v.parameters.preference,
                      v.dataset_version, str(v.epochs_run), words(v.stop_reason), v.job_id)
    return table
