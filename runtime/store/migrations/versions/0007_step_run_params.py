"""Step runs record the parameters they ran with, so a stale step can say which parameter changed (the
fingerprint alone says only that one did).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cdl_step_run") as batch:
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
