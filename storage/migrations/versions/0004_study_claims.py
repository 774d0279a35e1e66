"""Study claims: which launch runs a study, and its heartbeat.

Revision ID: 0004_study_claims
Revises: 0003_trial_variant
Create Date: 2026-12-07

Why: two launches of one study at once both ran it (one failed on Optuna's writes, the
other then failed the first one's RUNNING trials). A launch now claims its study first,
atomically (one row per study name, inserted or refused), keeps the claim alive with a
heartbeat, and gives it up when it ends; `--resume` takes over a claim whose holder is
gone (`storage.claims`). Keyed by the study's name, not its id, so that a new study is
claimed before its row is written.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004_study_claims"
down_revision: str | None = "0003_trial_variant"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "insgd_study_claims",
        sa.Column("study", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=True),
        sa.Column("process_start", sa.BigInteger(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stale_after", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("study", name="pk_insgd_study_claims"),
    )


def downgrade() -> None:
    op.drop_table("insgd_study_claims")
