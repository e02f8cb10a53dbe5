"""The dataset service's metadata in SQLite: datasets, images, versions.

Object bytes live in the object store; a row here is the commit point that
makes an image or a version exist. Objects are written first, rows second, so a
process killed in between leaves at most an unreferenced object, never a row
pointing at nothing.

Every dataset belongs to a tenant, and so does everything of it (images,
versions, labels). Lookups of a dataset take the tenant; the other methods take
a dataset id that such a lookup returned.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainyard.db import Database

SCHEMA_VERSION = 2
DEFAULT_TENANT = "default"  # owner of the datasets created before tenants existed (schema 1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    create_time   REAL NOT NULL,
    deleted_time  REAL,
    UNIQUE (tenant, display_name)
);
CREATE TABLE IF NOT EXISTS images (
    dataset_id  TEXT NOT NULL REFERENCES datasets(id),
    image_id    TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    label       TEXT NOT NULL DEFAULT '',
    format      TEXT NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    size_bytes  INTEGER NOT NULL,
    create_time REAL NOT NULL,
    label_time  REAL NOT NULL,
    PRIMARY KEY (dataset_id, image_id)
);
CREATE INDEX IF NOT EXISTS images_by_label ON images(dataset_id, label);
CREATE TABLE IF NOT EXISTS versions (
    dataset_id     TEXT NOT NULL REFERENCES datasets(id),
    name           TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    train_ratio    TEXT NOT NULL,
    seed           INTEGER NOT NULL,
    create_time    REAL NOT NULL,
    manifest_key   TEXT NOT NULL,
    metadata_key   TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    parent_version TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dataset_id, name)
);
CREATE TABLE IF NOT EXISTS version_samples (
    dataset_id TEXT NOT NULL,
    version    TEXT NOT NULL,
    image_id   TEXT NOT NULL,
    label      TEXT NOT NULL,
    usage      TEXT NOT NULL CHECK (usage IN ('TRAIN', 'EVAL')),
    PRIMARY KEY (dataset_id, version, image_id),
    FOREIGN KEY (dataset_id, version) REFERENCES versions(dataset_id, name)
);
"""

# Upgrades of a database written by an earlier release: MIGRATIONS[n] takes schema n to n + 1.
MIGRATIONS = {
    # 1 → 2: datasets gain a tenant; display names are unique per tenant. SQLite cannot drop the
    # old UNIQUE(display_name), so the table is rebuilt (ALTER TABLE docs, "other kinds of table
    # schema changes"); every existing dataset goes to the tenant "default".
    1: f"""
CREATE TABLE datasets_v2 (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    create_time   REAL NOT NULL,
    deleted_time  REAL,
    UNIQUE (tenant, display_name)
);
INSERT INTO datasets_v2 (id, tenant, display_name, description, create_time, deleted_time)
    SELECT id, '{DEFAULT_TENANT}', display_name, description, create_time, deleted_time FROM datasets;
DROP TABLE datasets;
ALTER TABLE datasets_v2 RENAME TO datasets;
""",
}


@dataclass(frozen=True)
class DatasetRow:
    id: str
    tenant: str
    display_name: str
    description: str
    create_time: float
    image_count: int
    labeled_image_count: int
    version_count: int


@dataclass(frozen=True)
class ImageRow:
    image_id: str
    file_name: str
    label: str
    format: str
    width: int
    height: int
    size_bytes: int
    create_time: float


@dataclass(frozen=True)
class VersionRow:
    dataset_id: str
    name: str
    seq: int
    train_ratio: str
    seed: int
    create_time: float
    manifest_key: str
    metadata_key: str
    content_hash: str
    parent_version: str


@dataclass(frozen=True)
class Usage:
    """What a dataset and its tenant hold, as the limits count it."""

    dataset_images: int  # images of the dataset
    tenant_bytes: int  # image bytes of all the tenant's live datasets


class DatasetStore:
    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA, SCHEMA_VERSION, MIGRATIONS)

    # datasets --------------------------------------------------------------------
    def insert_dataset(self, tenant: str, dataset_id: str, display_name: str, description: str, now: float) -> bool:
        """False when the tenant has a dataset of that display name."""
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO datasets (id, tenant, display_name, description, create_time) VALUES (?, ?, ?, ?, ?)",
                    (dataset_id, tenant, display_name, description, now),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    _DATASET_SELECT = """
        SELECT d.*,
          (SELECT COUNT(*) FROM images i WHERE i.dataset_id = d.id) AS image_count,
          (SELECT COUNT(*) FROM images i WHERE i.dataset_id = d.id AND i.label != '') AS labeled_image_count,
          (SELECT COUNT(*) FROM versions v WHERE v.dataset_id = d.id) AS version_count
        FROM datasets d
    """
    _LIVE = " WHERE d.deleted_time IS NULL"

    def find_dataset(self, tenant: str, id_or_name: str) -> DatasetRow | None:
        """The tenant's live dataset of that id or display name; another tenant's is None, as a missing one."""
        row = self.db.query_one(
            self._DATASET_SELECT + self._LIVE
            + " AND d.tenant = ? AND (d.id = ? OR d.display_name = ?) ORDER BY d.id = ? DESC LIMIT 1",
            (tenant, id_or_name, id_or_name, id_or_name),
        )
        return _dataset(row) if row else None

    def list_datasets(self, tenant: str, offset: int, limit: int) -> list[DatasetRow]:
        rows = self.db.query(
            self._DATASET_SELECT + self._LIVE + " AND d.tenant = ? ORDER BY d.create_time, d.id LIMIT ? OFFSET ?",
            (tenant, limit, offset),
        )
        return [_dataset(r) for r in rows]

    def usage(self, dataset_id: str) -> Usage:
        row = self.db.query_one(_USAGE, (dataset_id, dataset_id))
        return Usage(row["dataset_images"], row["tenant_bytes"])

    def mark_deleted(self, dataset_id: str, now: float) -> None:
        """Hide the dataset and free its name; its rows and objects stay until purged."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE datasets SET deleted_time = ?, display_name = display_name || '#deleted-' || id WHERE id = ?",
                (now, dataset_id),
            )

    def live_dataset_ids(self) -> list[str]:
        """Every tenant's datasets that are not deleted."""
        return [r["id"] for r in self.db.query("SELECT id FROM datasets WHERE deleted_time IS NULL ORDER BY id")]

    def image_ids(self, dataset_id: str) -> set[str]:
        return {r["image_id"] for r in self.db.query("SELECT image_id FROM images WHERE dataset_id = ?", (dataset_id,))}

    def deleted_before(self, cutoff: float) -> list[str]:
        rows = self.db.query("SELECT id FROM datasets WHERE deleted_time IS NOT NULL AND deleted_time < ?", (cutoff,))
        return [r["id"] for r in rows]

    def purge(self, dataset_id: str) -> None:
        with self.db.transaction() as tx:
            for table in ("version_samples", "versions", "images"):
                tx.execute(f"DELETE FROM {table} WHERE dataset_id = ?", (dataset_id,))
            tx.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,))

    # images ----------------------------------------------------------------------
    def get_image(self, dataset_id: str, image_id: str) -> ImageRow | None:
        row = self.db.query_one("SELECT * FROM images WHERE dataset_id = ? AND image_id = ?", (dataset_id, image_id))
        return _image(row) if row else None

    def insert_images(self, dataset_id: str, images: list[ImageRow], now: float,
                      within_limits: Callable[[Usage], None] = lambda usage: None) -> list[bool]:
        """Insert new images in one transaction; False for each whose bytes are stored already.

        An image already stored gets the label it was uploaded with, if any. When any
        image is new, `within_limits` sees the usage as it would be after the commit,
        inside the transaction (so concurrent inserts cannot both pass); if it raises,
        nothing is inserted.
        """
        inserted = []
        with self.db.transaction() as tx:
            for image in images:
                cursor = tx.execute(
                    "INSERT OR IGNORE INTO images (dataset_id, image_id, file_name, label, format, width, height,"
                    " size_bytes, create_time, label_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (dataset_id, image.image_id, image.file_name, image.label, image.format, image.width,
                     image.height, image.size_bytes, now, now),
                )
                inserted.append(cursor.rowcount == 1)
                if cursor.rowcount == 0 and image.label:
                    tx.execute(
                        "UPDATE images SET label = ?, label_time = ? WHERE dataset_id = ? AND image_id = ? AND label != ?",
                        (image.label, now, dataset_id, image.image_id, image.label),
                    )
            if any(inserted):
                row = tx.execute(_USAGE, (dataset_id, dataset_id)).fetchone()
                within_limits(Usage(row["dataset_images"], row["tenant_bytes"]))
        return inserted

    def set_labels(self, dataset_id: str, assignments: list[tuple[str, str]], now: float) -> int:
        """Apply (image_id, label) pairs in one transaction; the number of labels changed."""
        changed = 0
        with self.db.transaction() as tx:
            for image_id, label in assignments:
                changed += tx.execute(
                    "UPDATE images SET label = ?, label_time = ? WHERE dataset_id = ? AND image_id = ? AND label != ?",
                    (label, now, dataset_id, image_id, label),
                ).rowcount
        return changed

    def rename_label(self, dataset_id: str, label: str, new_label: str, now: float) -> int:
        """Give every image labeled `label` the label `new_label`; how many images carry `label`.

        Renaming a label to itself changes nothing: the label times stay, so a version
        published afterwards has the same manifest bytes (and content hash) as before.
        """
        with self.db.transaction() as tx:
            if label == new_label:
                return int(tx.execute(
                    "SELECT COUNT(*) AS n FROM images WHERE dataset_id = ? AND label = ?", (dataset_id, label),
                ).fetchone()["n"])
            return tx.execute(
                "UPDATE images SET label = ?, label_time = ? WHERE dataset_id = ? AND label = ?",
                (new_label, now, dataset_id, label),
            ).rowcount

    def existing_image_ids(self, dataset_id: str, image_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(image_ids), 500):
            batch = image_ids[start:start + 500]
            rows = self.db.query(
                f"SELECT image_id FROM images WHERE dataset_id = ? AND image_id IN ({', '.join('?' for _ in batch)})",
                (dataset_id, *batch),
            )
            found.update(r["image_id"] for r in rows)
        return found

    def list_images(self, dataset_id: str, label: str | None, unlabeled_only: bool, offset: int, limit: int) -> list[ImageRow]:
        sql, params = "SELECT * FROM images WHERE dataset_id = ?", [dataset_id]
        if unlabeled_only:
            sql += " AND label = ''"
        elif label:
            sql += " AND label = ?"
            params.append(label)
        sql += " ORDER BY image_id LIMIT ? OFFSET ?"
        return [_image(r) for r in self.db.query(sql, (*params, limit, offset))]

    def labeled_samples(self, dataset_id: str) -> list[tuple[str, str, float]]:
        """(image_id, label, label_time) of every labeled image, by image id."""
        rows = self.db.query(
            "SELECT image_id, label, label_time FROM images WHERE dataset_id = ? AND label != '' ORDER BY image_id",
            (dataset_id,),
        )
        return [(r["image_id"], r["label"], r["label_time"]) for r in rows]

    def class_counts(self, dataset_id: str) -> tuple[dict[str, int], int]:
        """Labeled images per class, and the number of unlabeled images."""
        rows = self.db.query(
            "SELECT label, COUNT(*) AS n FROM images WHERE dataset_id = ? GROUP BY label ORDER BY label", (dataset_id,)
        )
        counts = {r["label"]: r["n"] for r in rows}
        unlabeled = counts.pop("", 0)
        return counts, unlabeled

    # versions --------------------------------------------------------------------
    def insert_version(self, version: VersionRow, samples: list[tuple[str, str, str]]) -> bool:
        """Insert a version and its samples (image_id, label, usage) in one transaction.

        False when the name is taken (the unique key decides between concurrent publishers).
        """
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO versions (dataset_id, name, seq, train_ratio, seed, create_time, manifest_key,"
                    " metadata_key, content_hash, parent_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (version.dataset_id, version.name, version.seq, version.train_ratio, version.seed,
                     version.create_time, version.manifest_key, version.metadata_key, version.content_hash,
                     version.parent_version),
                )
                tx.executemany(
                    "INSERT INTO version_samples (dataset_id, version, image_id, label, usage) VALUES (?, ?, ?, ?, ?)",
                    [(version.dataset_id, version.name, i, label, usage) for i, label, usage in samples],
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def get_version(self, dataset_id: str, name: str) -> VersionRow | None:
        row = self.db.query_one("SELECT * FROM versions WHERE dataset_id = ? AND name = ?", (dataset_id, name))
        return VersionRow(**dict(row)) if row else None

    def list_versions(self, dataset_id: str, offset: int = 0, limit: int = 10**9) -> list[VersionRow]:
        rows = self.db.query(
            "SELECT * FROM versions WHERE dataset_id = ? ORDER BY seq LIMIT ? OFFSET ?", (dataset_id, limit, offset)
        )
        return [VersionRow(**dict(r)) for r in rows]

    def next_version_seq(self, dataset_id: str) -> int:
        row = self.db.query_one("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM versions WHERE dataset_id = ?", (dataset_id,))
        return int(row["n"])

    def version_samples(self, dataset_id: str, name: str) -> list[tuple[str, str, str]]:
        rows = self.db.query(
            "SELECT image_id, label, usage FROM version_samples WHERE dataset_id = ? AND version = ? ORDER BY image_id",
            (dataset_id, name),
        )
        return [(r["image_id"], r["label"], r["usage"]) for r in rows]


_USAGE = """
    SELECT
      (SELECT COUNT(*) FROM images WHERE dataset_id = ?) AS dataset_images,
      (SELECT COALESCE(SUM(i.size_bytes), 0) FROM images i JOIN datasets d ON d.id = i.dataset_id
        WHERE d.deleted_time IS NULL AND d.tenant = (SELECT tenant FROM datasets WHERE id = ?)) AS tenant_bytes
"""


def _dataset(row: sqlite3.Row) -> DatasetRow:
    """The API view of a dataset row (deleted_time is internal)."""
    return DatasetRow(
        id=row["id"], tenant=row["tenant"], display_name=row["display_name"], description=row["description"],
        create_time=row["create_time"], image_count=row["image_count"],
        labeled_image_count=row["labeled_image_count"], version_count=row["version_count"],
    )


def _image(row: sqlite3.Row) -> ImageRow:
    return ImageRow(
        image_id=row["image_id"], file_name=row["file_name"], label=row["label"], format=row["format"],
        width=row["width"], height=row["height"], size_bytes=row["size_bytes"], create_time=row["create_time"],
    )
