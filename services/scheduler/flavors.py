"""Compute flavors (rule S7), loaded from a TOML file (deploy/flavors.toml)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FLAVORS_FILE = Path(__file__).resolve().parents[2] / "deploy" / "flavors.toml"


@dataclass(frozen=True)
class Flavor:
    id: str
    display_name: str
    kind: str  # "pay_per_use" | "free"
    gpus_per_job: int
    price_per_hour: float
    tenant_concurrency_quota: int
    max_job_minutes: int | None = None
    terms: str = ""

    @property
    def is_free(self) -> bool:
        return self.kind == "free"


@dataclass(frozen=True)
class FlavorCatalog:
    flavors: dict[str, Flavor]
    default_flavor: str

    @classmethod
    def load(cls, path: Path = DEFAULT_FLAVORS_FILE) -> FlavorCatalog:
        data = tomllib.loads(path.read_text())
        flavors = {}
        for raw in data["flavors"]:
            flavor = Flavor(**raw)
            if flavor.kind not in ("pay_per_use", "free"):
                raise ValueError(f"{path}: flavor {flavor.id!r} has kind {flavor.kind!r}; expected pay_per_use or free")
            flavors[flavor.id] = flavor
        default = data.get("default_flavor", next(iter(flavors)))
        if default not in flavors:
            raise ValueError(f"{path}: default_flavor {default!r} is not a flavor")
        return cls(flavors, default)
