"""Step runs keep the one-line message they finished with ("2225 items from 1 source(s)"), so a step's run
history can say what each run did, not only that it ran.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cdl_step_run") as batch:
        batch.add_column(sa.Column("message", sa.Text(), nullable=True))
