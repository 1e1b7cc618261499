"""Jobs record the runtime process that owns them (host and pid), so a runtime that starts does not fail the
jobs of another runtime that still runs them (a second studio on the workspace, another machine sharing the
registry).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cdl_job") as batch:
        batch.add_column(sa.Column("host", sa.String(), nullable=True))
        batch.add_column(sa.Column("runtime_pid", sa.Integer(), nullable=True))
