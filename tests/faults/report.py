"""The loss table of the fault runs: printed after the run, written as JSON when TRAINYARD_FAULT_RESULTS asks."""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from tests.faults.workload import ROUNDS, SEED, Losses

# Written only when asked (TRAINYARD_FAULT_RESULTS=bench/results/faults.json), so that an ordinary
# test run does not rewrite the recorded figures.
RESULTS = Path(os.environ["TRAINYARD_FAULT_RESULTS"]) if os.environ.get("TRAINYARD_FAULT_RESULTS") else None
COMPONENTS = ("scheduler", "trainer", "dataset", "s3")
COUNTS = ("jobs_lost", "events_lost", "events_duplicated", "versions_corrupted", "images_lost", "partial_writes")


@dataclass
class Round:
    """One kill: when, for how long, what the job was doing, how long recovery took, what was lost."""

    component: str
    number: int
    kill_after_s: float = 0.0  # after the job was created
    down_s: float = 0.0  # from the kill to the restart command
    job_state_at_kill: str = ""
    recovery_s: float = 0.0  # restart command -> every service SERVING and answering, S3 included
    job_final_s: float = 0.0  # restart command -> the job created before the kill is final (0: it was already)
    outcomes: list[str] = field(default_factory=list)  # the first job's end first: "completed", "failed/trainer_lost"
    losses: Losses = field(default_factory=Losses)


def _spread(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "max": round(max(values), 2)} if values else {}


def summary(rounds: list[Round]) -> dict:
    """One component's figures over its rounds."""
    return {
        "rounds": len(rounds),
        **{name: sum(getattr(r.losses, name) for r in rounds) for name in COUNTS},
        "recovery_seconds": _spread([r.recovery_s for r in rounds]),
        "job_final_seconds": _spread([r.job_final_s for r in rounds]),
        "outcomes": dict(sorted(Counter(o for r in rounds for o in r.outcomes).items())),
        "detail": [{k: v for k, v in asdict(r).items() if k not in ("component", "losses")}
                   | {"problems": r.losses.problems} for r in rounds],
    }


@dataclass
class Report:
    seed: int
    rounds_wanted: int
    rounds: dict[str, list[Round]] = field(default_factory=dict)

    def table(self) -> str:
        head = ("component", "rounds", "jobs lost", "events lost", "events dup", "versions corrupted",
                "images lost", "partial writes", "recovery p50/max s", "job final p50/max s")
        rows = [head]
        for component, rounds in self.rounds.items():
            s = summary(rounds)
            rec, fin = s["recovery_seconds"], s["job_final_seconds"]
            rows.append((component, str(s["rounds"]), *(str(s[n]) for n in COUNTS),
                         f"{rec['p50']:.2f} / {rec['max']:.2f}", f"{fin['p50']:.2f} / {fin['max']:.2f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:],
                          f"seed {self.seed} (replay with TRAINYARD_FAULT_SEED={self.seed}), "
                          f"{self.rounds_wanted} round(s) per component (TRAINYARD_FAULT_ROUNDS)"])

    def write(self, path: Path | None = RESULTS) -> bool:
        """Write the JSON when asked and every component ran (a partial run keeps the last full one)."""
        if path is None or set(self.rounds) != set(COMPONENTS):
            return False
        body = {"seed": self.seed, "rounds_per_component": self.rounds_wanted,
                "components": {c: summary(self.rounds[c]) for c in COMPONENTS}}
        path.write_text(json.dumps(body, indent=2) + "\n")
        return True


REPORT = pytest.StashKey[Report]()


def report_of(config: pytest.Config) -> Report:
    """The session's report, kept on the pytest config so that the terminal summary finds it."""
    if REPORT not in config.stash:
        config.stash[REPORT] = Report(SEED, ROUNDS)
    return config.stash[REPORT]
