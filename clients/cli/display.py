"""How the CLI shows things to people: tables, the live job view, evaluations."""

from __future__ import annotations

from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from trainyard.common.v1 import training_pb2 as common
from trainyard.scheduler.v1 import scheduler_pb2 as pb

console = Console()


def state_name(state: int) -> str:
    return pb.TrainingJobState.Name(state).removeprefix("TRAINING_JOB_STATE_").lower()


def reason_name(reason: int) -> str:
    return common.StopReason.Name(reason).removeprefix("STOP_REASON_").lower().replace("_", " ")


def preference_name(value: int) -> str:
    return common.TrainingPreference.Name(value).removeprefix("TRAINING_PREFERENCE_").lower()


def as_json(message) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True)


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

    def show(self, event: pb.TrainingJobEvent) -> None:
        kind = event.WhichOneof("kind")
        if kind == "state_change":
            change = event.state_change
            text = f"[cyan]{state_name(change.state)}[/]"
            if change.stop_reason:
                text += f" ({reason_name(change.stop_reason)})"
            if change.message:
                text += f": {change.message}"
            self.progress.console.print(text)
        elif kind == "queue_position":
            q = event.queue_position
            self.progress.console.print(f"[yellow]queued[/]: position {q.position} ({q.jobs_ahead} ahead) — {q.wait_reason}")
        elif kind == "log":
            self.progress.console.print(f"[dim]{event.log.message}[/]")
        elif kind == "progress":
            p = event.progress
            if self.task is None:
                self.task = self.progress.add_task("training", total=p.steps_total or 1, stats="")
            stats = f"epoch {p.epoch}/{p.epochs_total}  loss {p.loss:.3f}  acc {p.train_accuracy:.3f}"
            if p.HasField("validation_accuracy"):
                stats += f"  val {p.validation_accuracy:.3f}"
            stats += f"  {p.images_per_second:,.0f} img/s"
            self.progress.update(self.task, completed=p.step, total=p.steps_total or 1, stats=stats)
        elif kind == "result":
            self.progress.console.print(f"[green]model version {event.result.model_version.version}[/]")


def job_table(jobs: list[pb.TrainingJob]) -> Table:
    table = Table(title="Training jobs")
    for column in ("job", "dataset", "version", "state", "reason", "flavor", "model", "created"):
        table.add_column(column)
    for j in jobs:
        table.add_row(
            j.id, j.dataset_id, j.parameters.dataset_version, state_name(j.state),
            reason_name(j.stop_reason) if j.stop_reason else "", j.parameters.flavor_id, j.model_version,
            j.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def summary_rows(mv: pb.ModelVersion) -> list[tuple[str, str]]:
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
    if ev.HasField("top5_accuracy"):
        rows.append(("top-5 accuracy", f"{ev.top5_accuracy:.4f}"))
    rows += [
        ("validation samples", str(ev.validation_samples)),
        ("architecture", mv.architecture),
        ("initialization", mv.initialization),
        ("epochs (best)", f"{mv.epochs_run} ({mv.best_epoch})"),
        ("stop reason", reason_name(mv.stop_reason)),
        ("device", mv.device),
        ("training time", f"{mv.training_time.ToTimedelta().total_seconds():.1f} s"),
        ("preference", preference_name(mv.parameters.preference)),
        ("train ratio", mv.parameters.train_ratio),
        ("max duration", f"{mv.parameters.max_duration_minutes} min"),
        ("flavor", mv.parameters.flavor_id),
    ]
    return rows


def evaluation_tables(mv: pb.ModelVersion) -> list[Table]:
    ev = mv.evaluation
    summary = Table(title=f"Model version {mv.version} — {mv.dataset_id} (dataset version {mv.dataset_version})")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    for name, value in summary_rows(mv):
        summary.add_row(name, value)
    per_class = Table(title="Classification statistics (validation set)")
    for column in ("class", "precision", "recall", "F1", "support", "train", "validation"):
        per_class.add_column(column, justify="right" if column != "class" else "left")
    for c in ev.classes:
        per_class.add_row(c.label, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support),
                          str(c.train_count), str(c.validation_count))
    return [summary, per_class]


def confusion_table(mv: pb.ModelVersion) -> Table:
    cm = mv.evaluation.confusion_matrix
    n = len(cm.labels)
    table = Table(title="Confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for label in cm.labels:
        table.add_column(label, justify="right")
    for i, label in enumerate(cm.labels):
        row = cm.counts[i * n:(i + 1) * n]
        table.add_row(label, *[f"[bold green]{v}[/]" if i == j else (f"[red]{v}[/]" if v else "·") for j, v in enumerate(row)])
    return table
