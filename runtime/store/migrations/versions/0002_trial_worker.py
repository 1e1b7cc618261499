"""Tuning workers: each trial records the worker (host:pid) that ran it.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cdl_trial") as batch:
        batch.add_column(sa.Column("worker", sa.String(), nullable=True))
