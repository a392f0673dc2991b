"""The one place that knows the configuration.

Settings come from the TOML file named by ``FLEXSVC_CONFIG``; a few secrets may come from the
environment instead (see ``docs/CONFIGURATION.md``). Everything is validated once at start-up so a
bad file fails loudly before the first request, not in the middle of one. Every error names the
file and the key (``pool.max_size``), never a secret's or a DSN's value: it is shown to the
operator as one line (``flexsvc.ops.operator_errors``).
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from psycopg import conninfo

DATABASE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
ALLOWED_JWT_ALGORITHMS = {
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
    "PS256", "PS384", "PS512", "EdDSA",
}


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: bytes
    databases: frozenset[str]

    def allows(self, database: str) -> bool:
        return "*" in self.databases or database in self.databases


@dataclass(frozen=True)
class AuthSettings:
    require: str = "both"
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_user_claim: str = "sub"
    jwt_leeway_seconds: int = 0

    @property
    def jwt_verification_key(self) -> str | None:
        if any(a.startswith("HS") for a in self.jwt_algorithms):
            return self.jwt_secret
        return self.jwt_public_key


@dataclass(frozen=True)
class PoolSettings:
    min_size: int = 1
    max_size: int = 4
    wait_timeout: float = 5.0
    connect_timeout: int = 3
    reconnect_timeout: float = 5.0
    max_idle: float = 300.0
    max_lifetime: float = 3600.0
    statement_timeout_ms: int = 60000
    lock_timeout_ms: int = 5000
    #: None: never use server-side prepared statements, so a pooler in transaction mode (any
    #: PgBouncer) works with no setting. An integer N prepares a query on a connection after N
    #: executions: a tuning knob for direct connections (docs/DEPLOYMENT.md, "PgBouncer").
    prepare_threshold: int | None = None


#: [pool] keys a database may override in its own [pools.NAME] table (connection behaviour);
#: statement/lock timeouts stay service-wide.
POOL_OVERRIDABLE = frozenset({"min_size", "max_size", "wait_timeout", "connect_timeout",
                              "reconnect_timeout", "max_idle", "max_lifetime",
                              "prepare_threshold"})
METRICS_DATABASE_LABELS = ("index", "name")


@dataclass(frozen=True)
class MetricsSettings:
    #: "index": /metrics labels databases db1, db2... (sorted names), so the unauthenticated
    #: endpoint cannot be used to learn tenant names; "name": the configured names.
    database_labels: str = "index"


@dataclass(frozen=True)
class LimitSettings:
    max_body_bytes: int = 16 * 1024 * 1024
    max_items: int = 10000
    #: Seconds an upload may stall (no byte received) before the request is dropped with 400,
    #: so a stalled or half-open client cannot hold a server thread forever (gunicorn only).
    body_stall_seconds: float = 30.0


@dataclass(frozen=True)
class IdempotencySettings:
    #: How long a recorded answer to a request with an Idempotency-Key is replayed (SPEC §9).
    ttl_hours: float = 24.0

    @property
    def ttl_seconds(self) -> float:
        return self.ttl_hours * 3600


@dataclass(frozen=True)
class Settings:
    databases: dict[str, str]
    auth: AuthSettings = field(default_factory=AuthSettings)
    api_keys: tuple[ApiKey, ...] = ()
    pool: PoolSettings = field(default_factory=PoolSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    source: str = "<memory>"
    pool_overrides: dict[str, PoolSettings] = field(default_factory=dict)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    idempotency: IdempotencySettings = field(default_factory=IdempotencySettings)

    def pool_for(self, database: str) -> PoolSettings:
        """The pool settings of ``database``: [pool] with its [pools.NAME] overrides."""
        return self.pool_overrides.get(database, self.pool)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the TOML file at ``path`` (default: ``$FLEXSVC_CONFIG``)."""
    named_by = "" if path else " (FLEXSVC_CONFIG)"
    path = path or os.environ.get("FLEXSVC_CONFIG")
    if not path:
        raise ConfigError("FLEXSVC_CONFIG is not set; point it at a TOML file (see README)")
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}{named_by}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}{named_by}: "
                          f"{exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
    try:
        return settings_from_mapping(raw, source=str(path), base_dir=Path(path).parent)
    except ConfigError as exc:
        raise ConfigError(f"configuration file {path}: {exc}") from exc


def settings_from_mapping(
    raw: dict[str, Any], *, source: str = "<memory>", base_dir: Path | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build validated settings from an already-parsed TOML document."""
    env = os.environ if environ is None else environ
    for name in ("databases", "auth", "pool", "pools", "limits", "metrics", "idempotency"):
        if not isinstance(raw.get(name, {}), dict):
            raise ConfigError(f"{name} must be a table ([{name}])")
    if not isinstance(raw.get("api_keys", []), list) or not all(
            isinstance(entry, dict) for entry in raw.get("api_keys", [])):
        raise ConfigError("api_keys must be an array of tables ([[api_keys]])")
    databases = _databases(raw.get("databases", {}), env)
    auth = _auth(raw.get("auth", {}), env, base_dir or Path.cwd())
    api_keys = tuple(_api_key(entry, databases) for entry in raw.get("api_keys", []))
    names = [k.name for k in api_keys]
    if len(set(names)) != len(names):
        raise ConfigError("api_keys: names must be unique")
    pool = _pool(raw.get("pool", {}), "pool")
    pool_overrides = _pool_overrides(raw.get("pools", {}), pool, databases)
    metrics = _section(MetricsSettings, raw.get("metrics", {}), "metrics")
    if metrics.database_labels not in METRICS_DATABASE_LABELS:
        raise ConfigError(f"metrics.database_labels must be one of {METRICS_DATABASE_LABELS}")
    limits = _section(LimitSettings, raw.get("limits", {}), "limits")
    if limits.max_body_bytes < 2:
        raise ConfigError("limits.max_body_bytes must be at least 2")
    if limits.max_items < 1:
        raise ConfigError("limits.max_items must be positive")
    if not limits.body_stall_seconds > 0:
        raise ConfigError("limits.body_stall_seconds must be positive")
    idempotency = _section(IdempotencySettings, raw.get("idempotency", {}), "idempotency")
    if not idempotency.ttl_hours > 0:
        raise ConfigError("idempotency.ttl_hours must be positive")
    return Settings(databases=databases, auth=auth, api_keys=api_keys, pool=pool,
                    limits=limits, source=source, pool_overrides=pool_overrides,
                    metrics=metrics, idempotency=idempotency)


def _pool(section: dict[str, Any], label: str, base: PoolSettings | None = None) -> PoolSettings:
    """[pool] (or a [pools.NAME] override on top of ``base``); TOML has no null, so
    ``prepare_threshold = false`` means "never prepare" (the default)."""
    section = dict(section)
    threshold = section.get("prepare_threshold")
    if threshold is False:
        section["prepare_threshold"] = None
    elif threshold is not None and (isinstance(threshold, bool) or not isinstance(
            threshold, int) or threshold < 0):
        raise ConfigError(f"{label}.prepare_threshold must be a non-negative integer or false")
    if base is None:
        pool = _section(PoolSettings, section, label)
    else:
        _section(PoolSettings, section, label)  # unknown keys fail the same way
        pool = replace(base, **section)
    if pool.min_size < 0 or pool.max_size < 1 or pool.min_size > pool.max_size:
        raise ConfigError(f"{label}: need 0 <= min_size <= max_size and max_size >= 1")
    return pool


def _pool_overrides(section: dict[str, Any], base: PoolSettings,
                    databases: dict[str, str]) -> dict[str, PoolSettings]:
    if not isinstance(section, dict):
        raise ConfigError("[pools] must hold one table per database name")
    overrides = {}
    for name, entry in section.items():
        if name not in databases:
            raise ConfigError(f"pools.{name}: not a configured database")
        if not isinstance(entry, dict):
            raise ConfigError(f"pools.{name} must be a table")
        not_here = set(entry) - POOL_OVERRIDABLE
        if not_here:
            raise ConfigError(f"pools.{name}: {sorted(not_here)} can only be set in [pool]")
        overrides[name] = _pool(entry, f"pools.{name}", base)
    return overrides


def _databases(section: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    databases: dict[str, str] = {}
    for name, dsn in section.items():
        if not DATABASE_NAME.match(name):
            raise ConfigError(f"databases: invalid database name {name!r}")
        override = env.get(database_env_var(name))
        where = (f"{database_env_var(name)} (overriding databases.{name})" if override
                 else f"databases.{name}")
        dsn = override or dsn
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError(f"{where}: DSN must be a non-empty string")
        try:
            conninfo.conninfo_to_dict(dsn)
        except Exception:   # libpq's message quotes the DSN, password included: not shown
            raise ConfigError(f"{where}: not a valid PostgreSQL connection string (a "
                              f"postgresql:// URI or key=value pairs)") from None
        databases[name] = dsn
    return databases


def database_env_var(name: str) -> str:
    """Environment variable that overrides the DSN of database ``name`` (for passwords)."""
    return "FLEXSVC_DB_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def _auth(section: dict[str, Any], env: dict[str, str], base_dir: Path) -> AuthSettings:
    section = dict(section)
    known = set(AuthSettings.__dataclass_fields__) - {"jwt_public_key"} | {"jwt_public_key_file"}
    unknown = set(section) - known
    if unknown:   # first: a misspelt key would otherwise look like a missing one
        raise ConfigError(f"auth: unknown keys {sorted(unknown)}")
    for key in ("jwt_secret", "jwt_public_key_file", "jwt_issuer", "jwt_audience",
                "jwt_user_claim"):
        if not isinstance(section.get(key, ""), str):
            raise ConfigError(f"auth.{key} must be a string")
    leeway = section.get("jwt_leeway_seconds", 0)
    if isinstance(leeway, bool) or not isinstance(leeway, int) or leeway < 0:
        raise ConfigError("auth.jwt_leeway_seconds must be a non-negative integer")
    require = section.pop("require", "both")
    if require not in ("both", "either"):
        raise ConfigError('auth.require must be "both" or "either"')
    algorithms = section.pop("jwt_algorithms", ["HS256"])
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise ConfigError('auth.jwt_algorithms must be a list of names, e.g. ["HS256"]')
    algorithms = tuple(algorithms)
    if not algorithms or any(a not in ALLOWED_JWT_ALGORITHMS for a in algorithms):
        raise ConfigError(f"auth.jwt_algorithms must be a non-empty subset of "
                          f"{sorted(ALLOWED_JWT_ALGORITHMS)} ('none' is never allowed)")
    symmetric = {a.startswith("HS") for a in algorithms}
    if len(symmetric) != 1:
        raise ConfigError("auth.jwt_algorithms: do not mix HS* with asymmetric algorithms")
    secret = env.get("FLEXSVC_JWT_SECRET") or section.pop("jwt_secret", None)
    section.pop("jwt_secret", None)
    public_key = None
    key_file = env.get("FLEXSVC_JWT_PUBLIC_KEY_FILE") or section.pop("jwt_public_key_file", None)
    section.pop("jwt_public_key_file", None)
    if key_file:
        key_path = Path(key_file)
        if not key_path.is_absolute():
            key_path = base_dir / key_path
        try:
            public_key = key_path.read_text()
        except OSError as exc:
            raise ConfigError(f"auth.jwt_public_key_file: cannot read {key_path}: "
                              f"{exc.strerror or exc}") from exc
    if True in symmetric and not secret:
        raise ConfigError("auth.jwt_secret (or FLEXSVC_JWT_SECRET) is required for HS* algorithms")
    if False in symmetric and not public_key:
        raise ConfigError("auth.jwt_public_key_file is required for asymmetric algorithms")
    settings = AuthSettings(
        require=require, jwt_algorithms=algorithms, jwt_secret=secret, jwt_public_key=public_key,
        jwt_issuer=section.pop("jwt_issuer", None), jwt_audience=section.pop("jwt_audience", None),
        jwt_user_claim=section.pop("jwt_user_claim", "sub"),
        jwt_leeway_seconds=section.pop("jwt_leeway_seconds", 0),
    )
    return settings


def _api_key(entry: dict[str, Any], databases: dict[str, str]) -> ApiKey:
    name = entry.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 20:
        raise ConfigError("api_keys: each needs a name of 1..20 characters")
    digest = str(entry.get("sha256", "")).lower()
    if not SHA256_HEX.match(digest):
        raise ConfigError(f"api_keys.{name}: sha256 must be 64 hex characters")
    allowed = entry.get("databases", [])
    if not isinstance(allowed, list) or not all(isinstance(d, str) for d in allowed):
        raise ConfigError(f"api_keys.{name}: databases must be a list of names or ['*']")
    unknown = [d for d in allowed if d != "*" and d not in databases]
    if unknown:
        raise ConfigError(f"api_keys.{name}: unknown databases {unknown}")
    return ApiKey(name=name, sha256=bytes.fromhex(digest), databases=frozenset(allowed))


def _section(cls: type, section: dict[str, Any], label: str) -> Any:
    """``cls`` built from a TOML table: unknown keys and values of the wrong type or below zero
    are errors naming ``label.key`` (these are numbers and names, never secrets: shown)."""
    known = set(cls.__dataclass_fields__)
    unknown = set(section) - known
    if unknown:
        raise ConfigError(f"{label}: unknown keys {sorted(unknown)}")
    types = typing.get_type_hints(cls)
    for key, value in section.items():
        expected = types[key]
        if value is None and type(None) in typing.get_args(expected):
            continue
        if expected in (int, float) or int in typing.get_args(expected):
            number = (int, float) if expected is float else int
            if isinstance(value, bool) or not isinstance(value, number) or value < 0:
                kind = "an integer" if number is int else "a number"
                raise ConfigError(f"{label}.{key} must be {kind} >= 0, got {value!r}")
        elif expected is str and not isinstance(value, str):
            raise ConfigError(f"{label}.{key} must be a string, got {value!r}")
    return cls(**section)
