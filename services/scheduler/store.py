"""The scheduler's durable state in SQLite: jobs, their event logs, model versions, trainers.

A state change and the event that announces it commit in one transaction, so
after a crash the event log and the job rows always agree.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainyard.db import Database

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    request_id      TEXT,
    request_fields  TEXT,
    tenant          TEXT NOT NULL,
    dataset_id      TEXT NOT NULL,
    flavor_id       TEXT NOT NULL,
    params          TEXT NOT NULL,
    state           TEXT NOT NULL,
    stop_reason     TEXT NOT NULL DEFAULT '',
    error_message   TEXT NOT NULL DEFAULT '',
    queue_position  INTEGER NOT NULL DEFAULT 0,
    wait_reason     TEXT NOT NULL DEFAULT '',
    create_time     REAL NOT NULL,
    start_time      REAL,
    end_time        REAL,
    duration_limit  REAL NOT NULL,
    deadline_reason TEXT NOT NULL,
    trainer_id      TEXT NOT NULL DEFAULT '',
    trainer_seq     INTEGER NOT NULL DEFAULT 0,
    stop_requested  TEXT NOT NULL DEFAULT '',
    model_version   TEXT NOT NULL DEFAULT '',
    latest_progress TEXT NOT NULL DEFAULT '',
    last_sequence   INTEGER NOT NULL DEFAULT 0,
    billed_seconds  REAL NOT NULL DEFAULT 0,
    cost            REAL NOT NULL DEFAULT 0,
    first_sequence  INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_request ON jobs(tenant, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, flavor_id, seq);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs(tenant, create_time);
CREATE TABLE IF NOT EXISTS events (
    job_id   TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    time     REAL NOT NULL,
    final    INTEGER NOT NULL,
    payload  TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
CREATE TABLE IF NOT EXISTS model_versions (
    dataset_id  TEXT NOT NULL,
    version     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    job_id      TEXT NOT NULL UNIQUE,
    create_time REAL NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (dataset_id, version)
);
CREATE TABLE IF NOT EXISTS trainers (
    id        TEXT PRIMARY KEY,
    address   TEXT NOT NULL,
    flavors   TEXT NOT NULL,
    slots     INTEGER NOT NULL,
    device    TEXT NOT NULL,
    last_seen REAL NOT NULL
);
"""

# Upgrades of a database written by an earlier release: MIGRATIONS[n] takes schema n to n + 1.
MIGRATIONS = {
    # 1 → 2: a job created with a request id records the request's other fields (canonical JSON),
    # so that the id sent again with different fields is refused. Jobs of release 1 have none
    # (NULL) and match any request with their id, as they did.
    1: "ALTER TABLE jobs ADD COLUMN request_fields TEXT;",
}

FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED")
ACTIVE_STATES = ("STARTING", "RUNNING")


@dataclass(frozen=True)
class Job:
    seq: int
    id: str
    request_id: str | None
    request_fields: str | None  # the creating request but its id, canonical JSON; None without an id or before schema 2
    tenant: str
    dataset_id: str
    flavor_id: str
    params: dict[str, Any]
    state: str
    stop_reason: str
    error_message: str
    queue_position: int
    wait_reason: str
    create_time: float
    start_time: float | None
    end_time: float | None
    duration_limit: float
    deadline_reason: str
    trainer_id: str
    trainer_seq: int
    stop_requested: str
    model_version: str
    latest_progress: dict[str, Any] | None
    last_sequence: int
    billed_seconds: float
    cost: float
    first_sequence: int  # the oldest event still kept (older ones were pruned)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def deadline(self) -> float | None:
        return None if self.start_time is None else self.start_time + self.duration_limit


@dataclass(frozen=True)
class Event:
    job_id: str
    sequence: int
    time: float
    final: bool
    payload: dict[str, Any]  # the event's kind in the proto-JSON form, e.g. {"stateChange": {...}}


@dataclass(frozen=True)
class Trainer:
    id: str
    address: str
    flavors: list[str]
    slots: int
    device: str
    last_seen: float


class SchedulerStore:
    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA, SCHEMA_VERSION, MIGRATIONS)
        self._touched: set[str] = set()
        self.on_events: Callable[[set[str]], None] = lambda job_ids: None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction; after it commits, `on_events` learns which jobs got events."""
        with self.db.transaction() as tx:
            self._touched = touched = set()  # transactions are serialised: one at a time
            yield tx
        if touched:
            self.on_events(touched)

    # jobs ------------------------------------------------------------------------
    def insert_job(self, tx: sqlite3.Connection, job: dict[str, Any]) -> None:
        job = {**job, "params": json.dumps(job["params"], sort_keys=True)}
        columns = ", ".join(job)
        tx.execute(f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' for _ in job)})", tuple(job.values()))

    def update_job(self, tx: sqlite3.Connection, job_id: str, **fields: Any) -> None:
        if "latest_progress" in fields:
            fields["latest_progress"] = json.dumps(fields["latest_progress"])
        assignments = ", ".join(f"{k} = ?" for k in fields)
        tx.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))

    def append_event(self, tx: sqlite3.Connection, job_id: str, now: float, payload: dict[str, Any], final: bool = False) -> int:
        row = tx.execute("SELECT last_sequence FROM jobs WHERE id = ?", (job_id,)).fetchone()
        sequence = row["last_sequence"] + 1
        tx.execute(
            "INSERT INTO events (job_id, sequence, time, final, payload) VALUES (?, ?, ?, ?, ?)",
            (job_id, sequence, now, int(final), json.dumps(payload)),
        )
        tx.execute("UPDATE jobs SET last_sequence = ? WHERE id = ?", (sequence, job_id))
        self._touched.add(job_id)
        return sequence

    def get_job(self, job_id: str, tx: sqlite3.Connection | None = None) -> Job | None:
        sql, params = "SELECT * FROM jobs WHERE id = ?", (job_id,)
        row = tx.execute(sql, params).fetchone() if tx else self.db.query_one(sql, params)
        return _job(row) if row else None

    def count_jobs(self) -> list[tuple[str, str, int]]:
        """(state, flavor, jobs) for every state and flavor that has jobs."""
        rows = self.db.query("SELECT state, flavor_id, COUNT(*) AS n FROM jobs GROUP BY state, flavor_id")
        return [(r["state"], r["flavor_id"], r["n"]) for r in rows]

    def count_ended_jobs(self) -> list[tuple[str, str, str, int]]:
        """(flavor, state, stop reason, jobs) of the ended jobs. Job rows are never deleted, so each
        count only grows: a counter that survives restarts."""
        rows = self.db.query(
            "SELECT flavor_id, state, stop_reason, COUNT(*) AS n FROM jobs WHERE state IN (?, ?, ?) "
            "GROUP BY flavor_id, state, stop_reason", FINAL_STATES)
        return [(r["flavor_id"], r["state"], r["stop_reason"] or "UNSPECIFIED", r["n"]) for r in rows]

    def job_by_request(self, tenant: str, request_id: str) -> Job | None:
        row = self.db.query_one("SELECT * FROM jobs WHERE tenant = ? AND request_id = ?", (tenant, request_id))
        return _job(row) if row else None

    def list_jobs(self, tenant: str, dataset_id: str | None, offset: int, limit: int) -> list[Job]:
        sql, params = "SELECT * FROM jobs WHERE tenant = ?", [tenant]
        if dataset_id:
            sql += " AND dataset_id = ?"
            params.append(dataset_id)
        sql += " ORDER BY seq DESC LIMIT ? OFFSET ?"
        return [_job(r) for r in self.db.query(sql, (*params, limit, offset))]

    def jobs_in_states(self, states: tuple[str, ...], tx: sqlite3.Connection | None = None) -> list[Job]:
        sql = f"SELECT * FROM jobs WHERE state IN ({', '.join('?' for _ in states)}) ORDER BY seq"
        rows = tx.execute(sql, states).fetchall() if tx else self.db.query(sql, states)
        return [_job(r) for r in rows]

    def tenant_used_dataset(self, tenant: str, dataset_id: str) -> bool:
        """Whether the tenant ever created a job on the dataset of that id (live or deleted since)."""
        return self.db.query_one("SELECT 1 FROM jobs WHERE tenant = ? AND dataset_id = ? LIMIT 1",
                                 (tenant, dataset_id)) is not None

    def jobs_created_since(self, tenant: str, since: float) -> list[float]:
        """Creation times of the tenant's jobs created at or after `since`, oldest first."""
        rows = self.db.query("SELECT create_time FROM jobs WHERE tenant = ? AND create_time >= ? ORDER BY create_time",
                             (tenant, since))
        return [r["create_time"] for r in rows]

    def usage(self, start: float, end: float, tenant: str | None = None) -> list[tuple[str, str, int, float, float]]:
        """(tenant, flavor, jobs, billed seconds, cost) of jobs that ended in [start, end); one tenant's or all."""
        where, params = "end_time >= ? AND end_time < ?", [start, end]
        if tenant is not None:
            where += " AND tenant = ?"
            params.append(tenant)
        rows = self.db.query(
            "SELECT tenant, flavor_id, COUNT(*) AS n, SUM(billed_seconds) AS s, SUM(cost) AS c FROM jobs"
            f" WHERE {where} GROUP BY tenant, flavor_id ORDER BY tenant, flavor_id",
            params,
        )
        return [(r["tenant"], r["flavor_id"], r["n"], r["s"], r["c"]) for r in rows]

    # events ----------------------------------------------------------------------
    def events_after(self, job_id: str, after: int, limit: int = 1000) -> list[Event]:
        rows = self.db.query(
            "SELECT * FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence LIMIT ?", (job_id, after, limit)
        )
        return [Event(r["job_id"], r["sequence"], r["time"], bool(r["final"]), json.loads(r["payload"])) for r in rows]

    def prune_events(self, ended_before: float) -> int:
        """Drop the events of jobs that ended before the cutoff, all but the final one."""
        pruned = 0
        with self.db.transaction() as tx:
            jobs = tx.execute(
                "SELECT id, last_sequence FROM jobs WHERE end_time IS NOT NULL AND end_time < ? AND first_sequence < last_sequence",
                (ended_before,),
            ).fetchall()
            for job in jobs:
                pruned += tx.execute("DELETE FROM events WHERE job_id = ? AND sequence < ?", (job["id"], job["last_sequence"])).rowcount
                tx.execute("UPDATE jobs SET first_sequence = last_sequence WHERE id = ?", (job["id"],))
        return pruned

    # model versions --------------------------------------------------------------
    def insert_model_version(self, tx: sqlite3.Connection, dataset_id: str, job_id: str, now: float, body: dict[str, Any]) -> str:
        row = tx.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM model_versions WHERE dataset_id = ?", (dataset_id,)).fetchone()
        version = f"V{row['n']:03d}"
        body = {**body, "version": version}
        tx.execute(
            "INSERT INTO model_versions (dataset_id, version, seq, job_id, create_time, body) VALUES (?, ?, ?, ?, ?, ?)",
            (dataset_id, version, row["n"], job_id, now, json.dumps(body)),
        )
        return version

    def model_versions(self, dataset_id: str, offset: int = 0, limit: int = 10**9) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT body FROM model_versions WHERE dataset_id = ? ORDER BY seq LIMIT ? OFFSET ?", (dataset_id, limit, offset)
        )
        return [json.loads(r["body"]) for r in rows]

    def model_version(self, dataset_id: str, version: str) -> dict[str, Any] | None:
        row = self.db.query_one("SELECT body FROM model_versions WHERE dataset_id = ? AND version = ?", (dataset_id, version))
        return json.loads(row["body"]) if row else None

    # trainers --------------------------------------------------------------------
    def upsert_trainer(self, trainer: Trainer) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO trainers (id, address, flavors, slots, device, last_seen) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET address = excluded.address, flavors = excluded.flavors,"
                " slots = excluded.slots, device = excluded.device, last_seen = excluded.last_seen",
                (trainer.id, trainer.address, json.dumps(trainer.flavors), trainer.slots, trainer.device, trainer.last_seen),
            )

    def trainers(self) -> list[Trainer]:
        return [
            Trainer(r["id"], r["address"], json.loads(r["flavors"]), r["slots"], r["device"], r["last_seen"])
            for r in self.db.query("SELECT * FROM trainers ORDER BY id")
        ]

    def delete_trainer(self, tx: sqlite3.Connection, trainer_id: str) -> None:
        tx.execute("DELETE FROM trainers WHERE id = ?", (trainer_id,))


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["params"] = json.loads(data["params"])
    data["latest_progress"] = json.loads(data["latest_progress"]) if data["latest_progress"] else None
    return Job(**data)
