"""Labeling leases: the item a labeler has open is not handed to another labeler until it is labeled,
skipped, or the lease runs out (Label Studio's task locking).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("cdl_label_lease",
                    sa.Column("item_id", sa.String(), nullable=False),
                    sa.Column("labeler", sa.String(), nullable=False),
                    sa.Column("until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
                    sa.PrimaryKeyConstraint("item_id"))
    op.create_index(op.f("ix_cdl_label_lease_labeler"), "cdl_label_lease", ["labeler"], unique=False)
