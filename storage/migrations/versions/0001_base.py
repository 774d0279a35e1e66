"""Base schema: insgd_studies, insgd_trials, insgd_epochs.

Revision ID: 0001_base
Revises:
Create Date: 2026-01-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001_base"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "insgd_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("code_version", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_insgd_studies"),
        sa.UniqueConstraint("name", name="uq_insgd_studies_name"),
    )
    op.create_table(
        "insgd_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("optimizer", sa.String(length=32), nullable=True),
        sa.Column("norm", sa.String(length=16), nullable=True),
        sa.Column("normalizer", sa.String(length=32), nullable=True),
        sa.Column("granularity", sa.String(length=32), nullable=True),
        sa.Column("lr", sa.Double(), nullable=True),
        sa.Column("eps", sa.Double(), nullable=True),
        sa.Column("beta", sa.Double(), nullable=True),
        sa.Column("momentum", sa.Double(), nullable=True),
        sa.Column("weight_decay", sa.Double(), nullable=True),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("dataset", sa.String(length=200), nullable=True),
        sa.Column("epochs_planned", sa.Integer(), nullable=True),
        sa.Column("epochs_completed", sa.Integer(), nullable=False),
        sa.Column("final_val_accuracy", sa.Double(), nullable=True),
        sa.Column("best_val_accuracy", sa.Double(), nullable=True),
        sa.Column("final_train_loss", sa.Double(), nullable=True),
        sa.Column("diverged", sa.Boolean(), nullable=False),
        sa.Column("stopped_early", sa.Boolean(), nullable=False),
        sa.Column("wall_seconds", sa.Double(), nullable=True),
        sa.Column("node_id", sa.String(length=200), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("device_name", sa.String(length=255), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('COMPLETE', 'PRUNED', 'FAIL', 'RUNNING')",
            name="ck_insgd_trials_state_valid",
        ),
        sa.CheckConstraint(
            "norm IS NULL OR norm IN ('none', 'l1', 'l2')", name="ck_insgd_trials_norm_valid"
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["insgd_studies.id"],
            name="fk_insgd_trials_study_id_insgd_studies",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_insgd_trials"),
        sa.UniqueConstraint("study_id", "trial_number", name="uq_insgd_trials_study_number"),
    )
    op.create_table(
        "insgd_epochs",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Double(), nullable=True),
        sa.Column("train_accuracy", sa.Double(), nullable=True),
        sa.Column("val_loss", sa.Double(), nullable=True),
        sa.Column("val_accuracy", sa.Double(), nullable=True),
        sa.Column("lr", sa.Double(), nullable=True),
        sa.Column("epoch_seconds", sa.Double(), nullable=True),
        sa.Column("images_per_second", sa.Double(), nullable=True),
        sa.Column("diverged", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["insgd_trials.id"],
            name="fk_insgd_epochs_trial_id_insgd_trials",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("trial_id", "epoch", name="pk_insgd_epochs"),
    )


def downgrade() -> None:
    op.drop_table("insgd_epochs")
    op.drop_table("insgd_trials")
    op.drop_table("insgd_studies")
