"""hybridlab's tables (prefix ``hl_``), living beside Optuna's own tables in the same database.

Optuna owns studies, trials, params, values and attributes; these tables add what Optuna has no
place for: the expanded architecture, the run's environment and failure reason, metric series
(training/eval curves), final scalar metrics and artifact files. Rows are keyed by Optuna's
``trial_id`` (unique in the database) and carry study name and trial number for convenience.

``hl_schema_version`` holds one row with the schema version; ``ensure_schema`` creates the
tables on first use and refuses databases written by a newer hybridlab.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, func, select)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hybridlab.errors import StoreError

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "hl_schema_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Architecture(Base):
    __tablename__ = "hl_architectures"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    pattern: Mapped[str] = mapped_column(Text, default="")       # expanded layer pattern
    n_layers: Mapped[int] = mapped_column(Integer, default=0)
    spec_yaml: Mapped[str] = mapped_column(Text, default="")
    params_total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    params_active: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Run(Base):
    """One Optuna trial as hybridlab ran it."""
    __tablename__ = "hl_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    study_name: Mapped[str] = mapped_column(String(512), nullable=False, index=True)
    trial_number: Mapped[int] = mapped_column(Integer, nullable=False)
    arch_hash: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("hl_architectures.hash"), nullable=True, index=True)
    train_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # running | complete | pruned | infeasible | failed | interrupted
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="running")
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    reused_from: Mapped[int | None] = mapped_column(Integer, nullable=True)  # trial number
    device: Mapped[str] = mapped_column(String(128), default="")
    host: Mapped[str] = mapped_column(String(256), default="")
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker: Mapped[int | None] = mapped_column(Integer, nullable=True)
    torch_version: Mapped[str] = mapped_column(String(64), default="")
    triton_version: Mapped[str] = mapped_column(String(64), default="")
    optuna_version: Mapped[str] = mapped_column(String(64), default="")
    hybridlab_version: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)         # training progress
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_hl_runs_reuse", "study_name", "arch_hash", "train_hash"),)


class MetricPoint(Base):
    """One point of a metric series (training loss, eval accuracy ... per step)."""
    __tablename__ = "hl_metric_series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_hl_metric_series_trial_name", "trial_id", "name", "step"),)


class Scalar(Base):
    """Final numbers of a trial: per-task scores, cost metrics, training figures."""
    __tablename__ = "hl_scalars"
    trial_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), default="metric")  # score | cost | train | metric
    value: Mapped[float | None] = mapped_column(Float, nullable=True)


class Artifact(Base):
    __tablename__ = "hl_artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    study_name: Mapped[str] = mapped_column(String(512), nullable=False)
    trial_number: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)   # weights | spec | ...
    path: Mapped[str] = mapped_column(Text, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("trial_id", "kind", name="uq_hl_artifacts_trial_kind"),)


class SchemaError(StoreError, RuntimeError):
    """The database's schema is not one this hybridlab can use (e.g. from a newer version)."""


def check_version(version: int, where: str) -> None:
    """Refuse a schema written by a newer hybridlab; ``where`` names the database."""
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{where} was written by a newer hybridlab (database schema version {version}; "
            f"this hybridlab knows versions up to {SCHEMA_VERSION}). Nothing was changed. "
            f"Upgrade hybridlab to use it (pip install -U hybridlab), or give --db another "
            f"database")


# Migrations: version -> function(connection) bringing the schema from `version` to `version+1`.
MIGRATIONS: dict[int, object] = {}


def ensure_schema(engine: Engine) -> int:
    """Create missing ``hl_`` tables and the version row (in one write transaction); check the
    version. Returns the schema version. Safe to call from several processes at once."""
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                Base.metadata.create_all(conn, checkfirst=True)
                row = conn.execute(select(SchemaVersion).order_by(SchemaVersion.id)).first()
                if row is None:
                    conn.execute(SchemaVersion.__table__.insert().values(
                        id=1, version=SCHEMA_VERSION, updated_at=utcnow()))
                    return SCHEMA_VERSION
                version = row.version
                check_version(version, engine.url.render_as_string(hide_password=True))
                while version < SCHEMA_VERSION:
                    MIGRATIONS[version](conn)  # type: ignore[operator]
                    version += 1
                    conn.execute(SchemaVersion.__table__.update().values(
                        version=version, updated_at=utcnow()))
                return version
        except (OperationalError, ProgrammingError) as e:  # another process created a table first
            if attempt == 2 or "exist" not in str(e).lower():
                raise
    raise AssertionError("unreachable")


def schema_version(engine: Engine) -> int | None:
    """Version recorded in the database, or None when hybridlab's tables are not there."""
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.max(SchemaVersion.version))).scalar()
    except (OperationalError, ProgrammingError):
        return None
