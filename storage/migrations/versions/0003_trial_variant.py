"""The trial's study variant ("sgd", "insgd-l2", "insgd-l2-frozen", ...) as a column.

Revision ID: 0003_trial_variant
Revises: 0002_analysis_indexes
Create Date: 2026-12-08

Why: a study compares variants side by side, and the frozen-normalizer controls
("insgd-l1-frozen", "insgd-l2-frozen": INSGD with beta = 1.0) share optimizer and
norm with their INSGD variants, so the variant is no longer implied by the norm.
The recorder writes it; `insgd-study query --where variant=...` filters on it.

Existing rows are backfilled from what they trained: "sgd" where the optimizer is
SGD or there is no norm, else "insgd-<norm>", with "-frozen" where beta is 1.0
(`study.config.variant_of`, the same rule). One UPDATE, the same SQL on SQLite and
PostgreSQL (`||` concatenates on both).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_trial_variant"
down_revision: str | None = "0002_analysis_indexes"
branch_labels: str | None = None
depends_on: str | None = None

BACKFILL = """
UPDATE insgd_trials SET variant = CASE
    WHEN optimizer = 'sgd' OR norm IS NULL OR norm = 'none' THEN 'sgd'
    WHEN beta = 1.0 THEN 'insgd-' || norm || '-frozen'
    ELSE 'insgd-' || norm
END
WHERE variant IS NULL
"""


def upgrade() -> None:
    op.add_column("insgd_trials", sa.Column("variant", sa.String(length=64), nullable=True))
    op.execute(BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table("insgd_trials") as batch:
        batch.drop_column("variant")
