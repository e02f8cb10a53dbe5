"""Identity: API keys that map to tenants, and the internal credential between services.

Every RPC except health checks carries `authorization: Bearer <credential>`.

- A user's credential is an API key `tyk_<id>_<secret>`. Keys live in a JSON
  file (`TRAINYARD_API_KEYS_FILE`) that stores only the SHA-256 of each key;
  `trainyard keys create|list|revoke` edits it, and every service rereads it
  when it changes, so a revoked key stops working within a second without a
  restart. Keys carry 192 random bits, so a fast hash is the right one (there
  is nothing to brute-force that a slow hash would protect).
- A service calling another presents the internal token
  (`TRAINYARD_INTERNAL_TOKEN` / `TRAINYARD_INTERNAL_TOKEN_FILE`) and names the
  tenant it acts for in `x-trainyard-tenant`. Methods meant only for services
  (the trainer's API, trainer registration) refuse user keys.

The interceptor in `trainyard.rpc` authenticates each call and makes the
`Principal` available to the handler through `current()`; servicers pass the
tenant on to domain code explicitly.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from trainyard.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated

TENANT_HEADER = "x-trainyard-tenant"
KEY_PREFIX = "tyk_"
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_KEY_PATTERN = re.compile(r"^tyk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_RELOAD_CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant's API key, or one of our services acting for a tenant."""

    tenant: str
    key_id: str
    admin: bool = False
    internal: bool = False


@dataclass(frozen=True)
class ApiKey:
    """One stored key: never the key itself, only its hash."""

    id: str
    tenant: str
    name: str
    sha256: str
    created: float
    admin: bool = False
    revoked: float | None = None


def validate_tenant(tenant: str) -> str:
    if not TENANT_PATTERN.match(tenant):
        raise InvalidArgument.field("tenant", f"{tenant!r} is not a tenant name: lowercase letters, digits and '-', 1–63 characters")
    return tenant


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The API-key file: create, list, revoke, and check a presented key.

    Writes take an exclusive lock and replace the file atomically, so concurrent
    admin commands and readers never see half a file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._keys: dict[str, ApiKey] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    # reading ---------------------------------------------------------------------
    def _read(self) -> dict[str, ApiKey]:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {k["id"]: ApiKey(**k) for k in document.get("keys", [])}

    def _fresh(self, force: bool = False) -> dict[str, ApiKey]:
        """The keys, reread when the file changed (checked at most every half second, or now)."""
        now = time.monotonic()
        with self._lock:
            if force or now - self._checked >= _RELOAD_CHECK_SECONDS or self._stamp is None:
                self._checked = now
                try:
                    stat = self.path.stat()
                    stamp = (stat.st_mtime_ns, stat.st_size)
                except FileNotFoundError:
                    stamp = (0, 0)
                if stamp != self._stamp:
                    self._keys, self._stamp = self._read(), stamp
            return self._keys

    def list(self) -> list[ApiKey]:
        return sorted(self._read().values(), key=lambda k: (k.tenant, k.created))

    def authenticate(self, presented: str) -> ApiKey | None:
        """The live key matching `presented`, or None."""
        match = _KEY_PATTERN.match(presented)
        if not match:
            return None
        key = self._fresh().get(match.group(1))
        if key is None:  # perhaps created a moment ago: a stat is cheap, a reread only when changed
            key = self._fresh(force=True).get(match.group(1))
        if key is None or key.revoked is not None:
            return None
        return key if hmac.compare_digest(key.sha256, _digest(presented)) else None

    # writing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, ApiKey]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self._read()
            yield keys
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"keys": [asdict(k) for k in keys.values()]}, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)

    def create(self, tenant: str, name: str = "", admin: bool = False) -> tuple[ApiKey, str]:
        """A new key for `tenant`: (its record, the key itself — shown once, never stored)."""
        validate_tenant(tenant)
        key_id = secrets.token_hex(6)
        plaintext = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
        record = ApiKey(key_id, tenant, name, _digest(plaintext), time.time(), admin)
        with self._editing() as keys:
            keys[key_id] = record
        return record, plaintext

    def revoke(self, key_id: str) -> ApiKey:
        with self._editing() as keys:
            if key_id not in keys:
                raise NotFound(f"API key {key_id!r} not found")
            if keys[key_id].revoked is None:
                keys[key_id] = replace(keys[key_id], revoked=time.time())
            return keys[key_id]


class Authenticator:
    """Decides who a call comes from, and whether that caller may call the method."""

    def __init__(self, keys: KeyStore, internal_token: str, internal_methods: Sequence[str] = ()) -> None:
        if len(internal_token) < 16:
            raise ValueError("the internal token must have at least 16 characters")
        self.keys = keys
        self._internal_token = internal_token
        self._internal_methods = frozenset(internal_methods)

    def authenticate(self, method: str, metadata: Mapping[str, str]) -> Principal:
        header = metadata.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated(
                "missing credential: send the metadata 'authorization: Bearer <API key>' "
                "(an operator creates keys with `trainyard keys create --tenant NAME`)")
        if hmac.compare_digest(credential.encode(), self._internal_token.encode()):
            tenant = metadata.get(TENANT_HEADER, "")
            if tenant:
                validate_tenant(tenant)
            return Principal(tenant, "internal", internal=True)
        key = self.keys.authenticate(credential)
        if key is None:
            raise Unauthenticated("the API key is not valid (unknown, malformed or revoked)")
        if method in self._internal_methods:
            raise PermissionDenied(f"{method.rsplit('/', 1)[-1]} is called by Trainyard's own services only")
        return Principal(key.tenant, key.id, admin=key.admin)


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("trainyard_principal", default=None)


def bind(principal: Principal | None) -> None:
    """Set by the RPC interceptor for the call being handled."""
    _current.set(principal)


def current() -> Principal:
    """The caller of the RPC being handled."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no authenticated caller")
    return principal


def tenant() -> str:
    """The tenant the RPC being handled acts for (a tenant-less internal call has none)."""
    principal = current()
    if not principal.tenant:
        raise InvalidArgument.field(TENANT_HEADER, "an internal call acting on tenant data must name the tenant")
    return principal.tenant


@dataclass(frozen=True)
class CallCredentials:
    """What a client sends: its API key, or the internal token plus the tenant acted for."""

    token: str
    tenant: str = ""

    def metadata(self, tenant: str | None = None) -> tuple[tuple[str, str], ...]:
        acting_for = self.tenant if tenant is None else tenant
        headers = [("authorization", f"Bearer {self.token}")]
        if acting_for:
            headers.append((TENANT_HEADER, acting_for))
        return tuple(headers)


def read_internal_token(env: Mapping[str, str]) -> str:
    """TRAINYARD_INTERNAL_TOKEN, or the contents of TRAINYARD_INTERNAL_TOKEN_FILE."""
    token = env.get("TRAINYARD_INTERNAL_TOKEN", "")
    path = env.get("TRAINYARD_INTERNAL_TOKEN_FILE", "")
    if not token and path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise SystemExit(f"TRAINYARD_INTERNAL_TOKEN_FILE={path}: {exc.strerror}") from None
    if len(token) < 16:
        raise SystemExit("missing configuration: TRAINYARD_INTERNAL_TOKEN or TRAINYARD_INTERNAL_TOKEN_FILE "
                         "(the credential the services use between themselves, at least 16 characters)")
    return token


def new_internal_token() -> str:
    return secrets.token_urlsafe(32)
