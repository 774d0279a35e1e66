"""The results schema: studies, trials and per-epoch metrics, as SQLAlchemy 2 typed models.

Our tables carry an `insgd_` prefix because Optuna's RDBStorage keeps its own
`studies`, `trials`, ... (and `alembic_version`) in the same database, so that
optuna-dashboard and our analysis read one URL. The models here are the *head*
of the migrations in `storage/migrations/versions`; a test checks that the two
agree, so change both together (add a new revision, never edit a shipped one).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TABLE_PREFIX = "insgd_"
VERSION_TABLE = "insgd_alembic_version"


class TrialState(enum.StrEnum):
    """Where a trial stands; PRUNED means a scheduler stopped it early on purpose."""

    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"
    RUNNING = "RUNNING"


COMPLETE, PRUNED, FAIL, RUNNING = (s.value for s in TrialState)
TRIAL_STATES: tuple[str, ...] = tuple(s.value for s in TrialState)
#: "none" is plain SGD (no input normalization); l1 / l2 are INSGD's input-energy norms.
NORM_VALUES: tuple[str, ...] = ("none", "l1", "l2")

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no time zones (it would hand back naive datetimes and drop the
    offset of aware ones), PostgreSQL does; this makes both behave the same.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Study(Base):
    """One named study: its full configuration and the code version that ran it."""

    __tablename__ = "insgd_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    code_version: Mapped[str] = mapped_column(String(200), default="")

    trials: Mapped[list[Trial]] = relationship(back_populates="study", passive_deletes=True)


class Trial(Base):
    """One training run of a study (one Optuna trial number) and its outcome."""

    __tablename__ = "insgd_trials"
    __table_args__ = (
        UniqueConstraint("study_id", "trial_number", name="uq_insgd_trials_study_number"),
        CheckConstraint("state IN ('COMPLETE', 'PRUNED', 'FAIL', 'RUNNING')", name="state_valid"),
        CheckConstraint("norm IS NULL OR norm IN ('none', 'l1', 'l2')", name="norm_valid"),
        # The analysis reads "study S, norm N, across lr": one index serves it (rev 0002).
        Index("ix_insgd_trials_study_norm_lr", "study_id", "norm", "lr"),
        Index("ix_insgd_trials_study_state", "study_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("insgd_studies.id", ondelete="CASCADE"))
    trial_number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=RUNNING)
    optimizer: Mapped[str | None] = mapped_column(String(32))
    norm: Mapped[str | None] = mapped_column(String(16))
    normalizer: Mapped[str | None] = mapped_column(String(32))
    granularity: Mapped[str | None] = mapped_column(String(32))
    lr: Mapped[float | None] = mapped_column(Double)
    eps: Mapped[float | None] = mapped_column(Double)
    beta: Mapped[float | None] = mapped_column(Double)
    momentum: Mapped[float | None] = mapped_column(Double)
    weight_decay: Mapped[float | None] = mapped_column(Double)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(200))
    dataset: Mapped[str | None] = mapped_column(String(200))
    epochs_planned: Mapped[int | None] = mapped_column(Integer)
    epochs_completed: Mapped[int] = mapped_column(Integer, default=0)
    final_val_accuracy: Mapped[float | None] = mapped_column(Double)
    best_val_accuracy: Mapped[float | None] = mapped_column(Double)
    final_train_loss: Mapped[float | None] = mapped_column(Double)
    diverged: Mapped[bool] = mapped_column(Boolean, default=False)
    stopped_early: Mapped[bool] = mapped_column(Boolean, default=False)
    wall_seconds: Mapped[float | None] = mapped_column(Double)
    node_id: Mapped[str | None] = mapped_column(String(200))
    hostname: Mapped[str | None] = mapped_column(String(255))
    device_name: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    # Added in revision 0002: the trial's whole configuration (schedule, nesterov, ...),
    # so options without a column of their own are still queryable from SQL.
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Added in revision 0003: the study variant the trial belongs to ("sgd", "insgd-l2",
    # "insgd-l2-frozen", ...: study.config.VARIANTS), as the study named it. Free text:
    # the variants are the study's business; rows written before it are backfilled from
    # optimizer, norm and beta (see the revision).
    variant: Mapped[str | None] = mapped_column(String(64))

    study: Mapped[Study] = relationship(back_populates="trials")
    epochs: Mapped[list[Epoch]] = relationship(back_populates="trial", passive_deletes=True)


class Epoch(Base):
    """The metrics the trainer reports after one epoch (trainers.config.EpochMetrics)."""

    __tablename__ = "insgd_epochs"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("insgd_trials.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float | None] = mapped_column(Double)
    train_accuracy: Mapped[float | None] = mapped_column(Double)
    val_loss: Mapped[float | None] = mapped_column(Double)
    val_accuracy: Mapped[float | None] = mapped_column(Double)
    lr: Mapped[float | None] = mapped_column(Double)
    epoch_seconds: Mapped[float | None] = mapped_column(Double)
    images_per_second: Mapped[float | None] = mapped_column(Double)
    diverged: Mapped[bool] = mapped_column(Boolean, default=False)
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow)

    trial: Mapped[Trial] = relationship(back_populates="epochs")


class StudyClaim(Base):
    """Which launch runs a study now (revision 0003; `storage.claims`): at most one row
    per study name, the launch's id, where it runs and when it last said it was alive."""

    __tablename__ = "insgd_study_claims"

    study: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    boot_id: Mapped[str | None] = mapped_column(String(64))
    process_start: Mapped[int | None] = mapped_column(BigInteger)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stale_after: Mapped[float] = mapped_column(Double)


#: Trial columns a caller may set through the write API (everything but keys and links).
TRIAL_FIELDS: tuple[str, ...] = tuple(
    c.name for c in Trial.__table__.columns if c.name not in ("id", "study_id", "trial_number")
)
#: Per-epoch metric columns (the fields of trainers.config.EpochMetrics, minus `epoch`).
EPOCH_METRICS: tuple[str, ...] = tuple(
    c.name for c in Epoch.__table__.columns if c.name not in ("trial_id", "epoch", "recorded_at")
)
