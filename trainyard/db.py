"""The embedded metadata database: SQLite in WAL mode, one connection, one lock.

Every state change is one transaction, so a process killed at any moment
leaves either the old or the new state on disk (synchronous=FULL: a committed
transaction survives power loss too). One serialised connection is plenty for
our metadata rates and keeps the reasoning simple.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class SchemaMismatch(RuntimeError):
    """The database file was written by a release with another schema."""


class Database:
    def __init__(self, path: Path, schema: str, version: int = 1) -> None:
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
            if not empty and found != version:
                raise SchemaMismatch(
                    f"{path} has schema version {found}; this release expects {version}. "
                    "Restore a backup taken with the matching release or migrate it (docs/operations.md, Upgrading)."
                )
            self._conn.executescript(schema)
            self._conn.execute(f"PRAGMA user_version = {int(version)}")

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
