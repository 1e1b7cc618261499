"""A trial that runs again the trial of a tuning worker that died records that trial's number.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cdl_trial") as batch:
        batch.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
