"""Step runs record the host that runs them, so a process on another machine sharing the registry is not
taken for a dead one (a pid means something only on its own host).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cdl_step_run") as batch:
        batch.add_column(sa.Column("host", sa.String(), nullable=True))
