"""The embedded metadata database: SQLite in WAL mode, one connection, one lock.

Every state change is one transaction, so a process killed at any moment
leaves either the old or the new state on disk (synchronous=FULL: a committed
transaction survives power loss too). One serialised connection is plenty for
our metadata rates and keeps the reasoning simple.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class SchemaMismatch(RuntimeError):
    """The database file was written by a release with another schema."""


class Database:
    def __init__(self, path: Path, schema: str, version: int = 1, migrations: Mapping[int, str] | None = None) -> None:
        """Open (or create) the database at schema `version`.

        `migrations[n]` is the SQL that upgrades a database of version n to n + 1; a
        file written by an older release is upgraded step by step, all steps in one
        transaction with foreign-key enforcement paused (so a step may rebuild a table
        the way SQLite's ALTER TABLE documentation prescribes) and checked before the
        commit. A version with no path of migrations to `version` is a SchemaMismatch.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            found = self._conn.execute("PRAGMA user_version").fetchone()[0]
            empty = self._conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            steps = migrations or {}
            if not empty and found < version and all(n in steps for n in range(found, version)):
                self._migrate(found, version, steps)
            elif not empty and found != version:
                raise SchemaMismatch(
                    f"{path} has schema version {found}; this release expects {version}. "
                    "Restore a backup taken with the matching release or migrate it (docs/operations.md, Upgrading)."
                )
            self._conn.executescript(schema)
            self._conn.execute(f"PRAGMA user_version = {int(version)}")

    def _migrate(self, found: int, version: int, steps: Mapping[int, str]) -> None:
        """Apply steps found → version in one transaction (the caller holds the lock)."""
        self._conn.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction, so before it
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for n in range(found, version):
                    for statement in _statements(steps[n]):
                        self._conn.execute(statement)
                broken = self._conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise SchemaMismatch(f"migrating schema {found} → {version} leaves {len(broken)} broken references")
                self._conn.execute(f"PRAGMA user_version = {int(version)}")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        finally:
            self._conn.execute("PRAGMA foreign_keys=ON")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a script, one at a time (executescript would commit our transaction)."""
    *parts, rest = script.split(";")
    pending = ""
    for part in parts:
        pending += part + ";"
        if sqlite3.complete_statement(pending):  # not a ';' inside a string or a trigger body
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if (pending + rest).strip():
        raise ValueError(f"incomplete SQL statement in a migration: {(pending + rest).strip()[:80]!r}")
