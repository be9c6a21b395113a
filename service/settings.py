"""Settings read from the environment; built once by the app or the CLI and passed down."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODELS = "service.models:Base"
CACHE_CLASSES = frozenset({"list", "item", "related", "count", "private"})


class Settings(BaseSettings):
    """Every knob of the service. Names match the environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    database_url: str = "sqlite+aiosqlite:///./service.db"
    # Streaming replicas of the PostgreSQL primary that serve reads (SPEC, Scaling out).
    database_replica_urls: Annotated[tuple[str, ...], NoDecode] = ()
    # How often each database's WAL position is polled, how long a poll may take before the
    # database counts as down, and how far (bytes of WAL) a replica may trail the primary
    # before it is skipped for every read.
    # Each replica's pool, per process (unset: POOL_SIZE and MAX_OVERFLOW, like the primary's).
    replica_pool_size: int | None = Field(default=None, ge=1)
    replica_max_overflow: int | None = Field(default=None, ge=0)
    replica_poll_seconds: float = Field(default=0.1, gt=0)
    replica_timeout_seconds: float = Field(default=0.5, gt=0)
    replica_max_lag_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # A replica that lacks a commit older than this is skipped. It also bounds how stale a
    # read can be when a write's WAL position was lost (the writer cut off, or the primary
    # gone, right after COMMIT): keep it below the pending window (REQUEST_TIMEOUT_SECONDS
    # plus the statement timeout), which the service checks at start-up.
    replica_max_lag_seconds: float = Field(default=10.0, gt=0)
    # The declarative base whose classes are served (SPEC, "Your own models").
    models: str = DEFAULT_MODELS
    cache_url: str = "memory://"
    api_tokens: Annotated[tuple[str, ...], NoDecode] = ()
    read_requires_token: bool = False

    # The async pool, per process (SQLite file databases pool their connections too).
    pool_size: int = Field(default=10, ge=1)
    # No overflow by default: under load that stays above the pool's size, SQLAlchemy opens
    # an overflow connection and closes it when it comes back, again and again (measured:
    # 103 new PostgreSQL sessions in 8 s at 32 connections, a quarter of the throughput).
    max_overflow: int = Field(default=0, ge=0)
    pool_timeout: float = Field(default=5.0, gt=0)
    pool_recycle: int = Field(default=1800, ge=-1)
    pool_pre_ping: bool = True
    # Only connections idle at least this long are pinged before use (0: every checkout).
    pool_ping_idle_seconds: float = Field(default=1.0, ge=0)
    statement_timeout_ms: int = Field(default=5000, ge=0)
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    # Collation for case-insensitive matching on PostgreSQL; "default" if built without ICU.
    postgres_fold_collation: str = "und-x-icu"

    # Reading limits.
    default_limit: int = Field(default=50, ge=1)
    max_limit: int = Field(default=500, ge=1)
    max_include_depth: int = Field(default=3, ge=1, le=32)
    max_include_paths: int = Field(default=10, ge=1)
    max_filters: int = Field(default=20, ge=0)
    max_in_values: int = Field(default=100, ge=1)
    max_embedded_rows: int = Field(default=10_000, ge=1)
    max_url_bytes: int = Field(default=8192, ge=256)

    # Writing limits.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch: int = Field(default=1000, ge=1)

    # argon2id cost: the defaults are OWASP's minimum (19 MiB, t=2, p=1).
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19_456, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Threads hashing at once; by default one core stays free for the event loop.
    hash_concurrency: int = Field(
        default_factory=lambda: max(1, min(2, (os.cpu_count() or 2) - 1)), ge=1
    )

    # The response cache.
    cache_ttl_seconds: float = Field(default=300.0, gt=0)
    cache_max_entries: int = Field(default=10_000, ge=1)
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    cache_prefix: str = "service"
    cache_timeout_seconds: float = Field(default=0.25, gt=0)  # per Redis call
    cache_retry_seconds: float = Field(default=5.0, gt=0)  # circuit cool-down
    cache_failure_threshold: int = Field(default=3, ge=1)  # failures in a row that open it
    cache_wait_seconds: float = Field(default=5.0, gt=0)  # single-flight followers
    # Request classes never cached: any of list, item, related, count, private.
    cache_skip: Annotated[frozenset[str], NoDecode] = frozenset()

    # Signs keyset cursors; instances behind one load balancer must share it.
    cursor_secret: str = ""

    request_timeout_seconds: float = Field(default=30.0, gt=0)  # the whole request's deadline
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)  # draining in-flight requests
    pgbouncer: bool = False  # asyncpg behind PgBouncer in transaction mode: no named statements
    # How pages load: `columns` (Core rows into dicts) or `orm` (entities via selectinload).
    loader: Literal["columns", "orm"] = "columns"
    log_level: str = "INFO"
    # FastAPI's native OpenTelemetry bridge (traces, metrics, logs to the globally configured
    # providers); /metrics (Prometheus) works either way.
    opentelemetry: bool = False

    @field_validator("api_tokens", "database_replica_urls", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("cache_skip", mode="before")
    @classmethod
    def _split_skip(cls, value: object) -> object:
        if isinstance(value, str):
            names = frozenset(n.strip() for n in value.split(",") if n.strip())
            unknown = names - CACHE_CLASSES
            if unknown:
                raise ValueError(
                    f"unknown request classes {sorted(unknown)}; use {sorted(CACHE_CLASSES)}"
                )
            return names
        return value

    @property
    def write_window_seconds(self) -> float:
        """How long a write may be in flight: the request's deadline, then its COMMIT."""
        return self.request_timeout_seconds + self.statement_timeout_ms / 1000

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
