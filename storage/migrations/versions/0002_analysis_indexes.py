"""Analysis indexes (study + norm + lr, study + state) and the trial's full `params`.

Revision ID: 0002_analysis_indexes
Revises: 0001_base
Create Date: 2026-01-12

Why: the robustness analysis reads "one study, one norm, across learning rates"
and the CLI filters by state; without these indexes a 10,000-trial study is a
full table scan per curve. `params` keeps every training option of a trial
(schedule, nesterov, batchnorm, ...) so that options without a column of their
own are not lost.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002_analysis_indexes"
down_revision: str | None = "0001_base"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("insgd_trials", sa.Column("params", sa.JSON(), nullable=True))
    op.create_index(
        "ix_insgd_trials_study_norm_lr", "insgd_trials", ["study_id", "norm", "lr"], unique=False
    )
    op.create_index(
        "ix_insgd_trials_study_state", "insgd_trials", ["study_id", "state"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_insgd_trials_study_state", table_name="insgd_trials")
    op.drop_index("ix_insgd_trials_study_norm_lr", table_name="insgd_trials")
    with op.batch_alter_table("insgd_trials") as batch:
        batch.drop_column("params")
