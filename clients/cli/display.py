"""How the CLI shows things to people: tables, the live job view, evaluations."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from trainyard.sdk import types

PIPED_WIDTH = 200  # output to a file or a pipe: wide lines rather than cut or wrapped ones


def _width() -> int | None:
    """None (the terminal's width, or COLUMNS) on a terminal; PIPED_WIDTH otherwise."""
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return None
    return PIPED_WIDTH


console = Console(width=_width())


def say(text: str) -> None:
    """A message that rich does not break into lines (the terminal wraps it): paths and ids in it copy whole."""
    console.print(text, soft_wrap=True)

__all__ = ["Column", "Progress", "Table", "Text", "console", "escape", "fitted_table", "progress_bar", "say"]


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of a list table.

    `key`: an id or name people type (a job id, a version): never cut or wrapped; nor are
    right-justified (number) columns.
    `optional`: 0 always shown; otherwise the table drops it when it does not fit the
    terminal, highest first, and its caption says which columns are left out.
    """

    header: str
    key: bool = False
    optional: int = 0
    justify: str = "left"


def fitted_table(title: str, columns: Sequence[Column | str], rows: Sequence[Sequence[str | Text]], *,
                 caption: str = "", on: Console | None = None) -> Table:
    """A table that fits the console without cutting what people type.

    Cells are plain text (a file name "[x].png" stays as it is); pass a rich `Text` to style one.
    Key columns keep their whole values (no wrapping, at least as wide as the longest);
    other columns wrap. Optional columns are dropped, highest `optional` first, while the
    table is wider than the console. On a console too narrow for the key columns even then,
    they are folded onto more lines rather than cut.
    """
    on = on or console
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    rows = [[cell if isinstance(cell, Text) else Text(str(cell)) for cell in row] for row in rows]
    shown = list(range(len(cols)))
    droppable = sorted((i for i, c in enumerate(cols) if c.optional), key=lambda i: -cols[i].optional)
    dropped: list[str] = []

    def whole(c: Column) -> bool:
        return c.key or c.justify == "right"

    def widest(i: int) -> int:
        return max([len(cols[i].header), *(len(str(row[i])) for row in rows)])

    def build(fold_whole: bool) -> Table:
        table = Table(title=escape(title))
        for i in shown:
            c = cols[i]
            kept = whole(c) and not fold_whole
            table.add_column(c.header, justify=c.justify, no_wrap=kept, min_width=widest(i) if kept else None,
                             overflow="ellipsis" if kept else "fold")
        for row in rows:
            table.add_row(*(row[i] for i in shown))
        return table

    while True:
        table = build(fold_whole=False)
        natural = on.measure(table, options=on.options.update_width(1 << 20)).maximum  # unwrapped
        if natural <= on.width:
            break
        if not droppable:
            # whole columns at their widest, the others wrapped down to one character, and the borders
            # and padding (3 a column, 1 more): wider than that, rich would cut the key columns at
            # the right edge; they are folded onto more lines instead, so every id is there, if broken
            narrowest = sum(widest(i) if whole(cols[i]) else 1 for i in shown) + 3 * len(shown) + 1
            if narrowest > on.width:
                table = build(fold_whole=True)
            break
        i = droppable.pop(0)
        shown.remove(i)
        dropped.append(cols[i].header)
    notes = [caption] if caption else []
    if dropped:
        notes.append(f"not shown, to fit the terminal: {', '.join(dropped)} (--json has every field)")
    table.caption = "\n".join(notes) or None
    return table


class progress_bar:  # noqa: N801 - used like a function: `with progress_bar("importing", total) as advance:`
    """A transient progress bar on a terminal (nothing when the output is a file or a pipe);
    the block gets `update(done, total=None)`."""

    def __init__(self, description: str, total: int | None) -> None:
        self.progress = Progress(console=console, transient=True) if console.is_terminal else None
        self.description, self.total = description, total

    def __enter__(self):
        if self.progress is None:
            return lambda done, total=None: None
        self.progress.start()
        task = self.progress.add_task(escape(self.description), total=self.total)
        return lambda done, total=None: self.progress.update(task, completed=done, total=total or self.total)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def eta_text(eta: timedelta | None, finished: bool = False) -> str:
    """The time left as H:MM:SS; -:--:-- when unknown (no estimate yet)."""
    if finished:
        return "0:00:00"
    if eta is None or eta.total_seconds() <= 0:
        return "-:--:--"
    seconds = round(eta.total_seconds())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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
            # the trainer's estimate (Progress.eta): right also when a re-attach replays the backlog at once
            TextColumn("eta {task.fields[eta]}"),
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
            say(text + (f": {escape(event.message)}" if event.message else ""))
        elif event.kind == "queue_position":
            say(f"[yellow]queued[/]: position {event.position} ({event.jobs_ahead} ahead) — {escape(event.message)}")
        elif event.kind == "log":
            say(f"[dim]{escape(event.message)}[/]")
        elif event.kind == "progress" and event.progress:
            p = event.progress
            if self.task is None:
                self.task = self.progress.add_task("training", total=p.steps_total or 1, stats="", eta=eta_text(None))
            stats = f"epoch {p.epoch}/{p.epochs_total}  loss {p.loss:.3f}  acc {p.train_accuracy:.3f}"
            if p.validation_accuracy is not None:
                stats += f"  val {p.validation_accuracy:.3f}"
            stats += f"  {p.images_per_second:,.0f} img/s"
            self.progress.update(self.task, completed=p.step, total=p.steps_total or 1, stats=stats,
                                 eta=eta_text(p.eta, finished=bool(p.steps_total) and p.step >= p.steps_total))
        elif event.kind == "result" and event.model_version:
            say(f"[green]model version {event.model_version.version}[/]")


def job_table(jobs: list[types.TrainingJob]) -> Table:
    columns = [Column("job", key=True), Column("dataset", key=True), Column("version", key=True), Column("state"),
               Column("reason", optional=1), Column("flavor", key=True, optional=3), Column("model", key=True),
               Column("created", optional=2)]
    rows = [[j.id, j.dataset_id, j.parameters.dataset_version, j.state, words(j.stop_reason), j.parameters.flavor_id,
             j.model_version, j.create_time.strftime("%Y-%m-%d %H:%M:%S") if j.create_time else ""]
            for j in jobs]
    return fitted_table("Training jobs", columns, rows)


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
    columns = [Column("version", key=True), Column("accuracy", justify="right"), Column("precision", justify="right"),
               Column("recall", justify="right"), Column("F1", justify="right"), Column("arch", optional=5),
               Column("preference", optional=4), Column("data", key=True), Column("epochs", justify="right", optional=2),
               Column("stop", optional=3), Column("job", key=True, optional=1)]
    rows = []
    for v in versions:
        e = v.evaluation
        rows.append([v.version + (" ★" if v.version == best else ""), f"{e.accuracy:.4f}", f"{e.macro.precision:.4f}",
                     f"{e.macro.recall:.4f}", f"{e.macro.f1:.4f}", v.architecture, words(v.parameters.preference),
                     v.dataset_version, str(v.epochs_run), words(v.stop_reason), v.job_id])
    return fitted_table(f"Model versions of {dataset}", columns, rows,
                        caption="precision, recall, F1: macro averages; ★ the best by macro precision")
