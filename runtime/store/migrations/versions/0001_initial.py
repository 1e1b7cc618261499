"""The registry's first schema (what `create_all` made before migrations existed).

A registry made before migrations has some of these tables (the first builds made only the data pipeline's):
this revision creates the ones it lacks and leaves the others, and their rows, as they are.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())

    def create_table(name, *columns, **kw):  # noqa: ANN001, ANN003, ANN202
        if name not in existing:
            op.create_table(name, *columns, **kw)

    def create_index(index, table, columns, **kw):  # noqa: ANN001, ANN003, ANN202
        if table not in existing:
            op.create_index(index, table, columns, **kw)

    create_table('cdl_alias',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('alias', sa.String(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('since', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('reason', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    create_index(op.f('ix_cdl_alias_name'), 'cdl_alias', ['name'], unique=False)
    create_table('cdl_cleaned',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(), nullable=False),
    sa.Column('uid', sa.String(), nullable=False),
    sa.Column('item_id', sa.String(), nullable=False),
    sa.Column('source', sa.String(), nullable=False),
    sa.Column('action', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    create_index(op.f('ix_cdl_cleaned_version'), 'cdl_cleaned', ['version'], unique=False)
    create_table('cdl_dataset_version',
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('dvc_hash', sa.String(), nullable=False),
    sa.Column('git_commit', sa.String(), nullable=True),
    sa.Column('items', sa.Integer(), nullable=False),
    sa.Column('classes', sa.JSON(), nullable=True),
    sa.Column('splits', sa.JSON(), nullable=True),
    sa.Column('split_classes', sa.JSON(), nullable=True),
    sa.Column('created', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('dvc_file', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('number')
    )
    create_index(op.f('ix_cdl_dataset_version_dvc_hash'), 'cdl_dataset_version', ['dvc_hash'], unique=False)
    create_index(op.f('ix_cdl_dataset_version_id'), 'cdl_dataset_version', ['id'], unique=True)
    create_table('cdl_deployment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device', sa.String(), nullable=False),
    sa.Column('action', sa.String(), nullable=False),
    sa.Column('name', sa.String(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('variant', sa.String(), nullable=True),
    sa.Column('bundle', sa.String(), nullable=True),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('time', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    create_index(op.f('ix_cdl_deployment_device'), 'cdl_deployment', ['device'], unique=False)
    create_table('cdl_device',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('address', sa.String(), nullable=False),
    sa.Column('token', sa.String(), nullable=False),
    sa.Column('cert_fingerprint', sa.String(), nullable=False),
    sa.Column('enroll_dir', sa.String(), nullable=False),
    sa.Column('created', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('last_seen', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_health', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    create_table('cdl_experiment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('step', sa.String(), nullable=False),
    sa.Column('job', sa.String(), nullable=True),
    sa.Column('dataset_version', sa.String(), nullable=False),
    sa.Column('transform', sa.String(), nullable=False),
    sa.Column('framework', sa.String(), nullable=False),
    sa.Column('template', sa.String(), nullable=False),
    sa.Column('study', sa.String(), nullable=True),
    sa.Column('git_commit', sa.String(), nullable=True),
    sa.Column('git_dirty', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('created', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('finished', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    create_index(op.f('ix_cdl_experiment_name'), 'cdl_experiment', ['name'], unique=False)
    create_table('cdl_item',
    sa.Column('uid', sa.String(), nullable=False),
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('source', sa.String(), nullable=False),
    sa.Column('source_name', sa.String(), nullable=False),
    sa.Column('source_label', sa.String(), nullable=True),
    sa.Column('source_split', sa.String(), nullable=True),
    sa.Column('pack', sa.String(), nullable=False),
    sa.Column('offset', sa.Integer(), nullable=False),
    sa.Column('length', sa.Integer(), nullable=False),
    sa.Column('encoding', sa.String(), nullable=False),
    sa.Column('split', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('uid')
    )
    create_index(op.f('ix_cdl_item_id'), 'cdl_item', ['id'], unique=False)
    create_index(op.f('ix_cdl_item_source_name'), 'cdl_item', ['source_name'], unique=False)
    create_table('cdl_job',
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=True),
    sa.Column('created', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('started', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('finished', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    create_table('cdl_job_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job', sa.String(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('step', sa.String(), nullable=True),
    sa.Column('fraction', sa.Float(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.Column('time', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    create_index('ix_cdl_job_event_job_seq', 'cdl_job_event', ['job', 'seq'], unique=False)
    create_table('cdl_label',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.String(), nullable=False),
    sa.Column('label', sa.String(), nullable=True),
    sa.Column('labeler', sa.String(), nullable=False),
    sa.Column('source', sa.String(), nullable=False),
    sa.Column('action', sa.String(), nullable=False),
    sa.Column('created', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('dataset_version', sa.String(), nullable=True),
    sa.Column('task_ref', sa.String(), nullable=True),
    sa.Column('undone', sa.Boolean(), nullable=False),
    sa.Column('undone_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    create_index('ix_cdl_label_item_action', 'cdl_label', ['item_id', 'action'], unique=False)
    create_table('cdl_metric',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    create_index('ix_cdl_metric_trial', 'cdl_metric', ['trial_id', 'epoch'], unique=False)
    create_table('cdl_model_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('framework', sa.String(), nullable=False),
    sa.Column('template', sa.String(), nullable=False),
    sa.Column('dataset_version', sa.String(), nullable=False),
    sa.Column('transform', sa.String(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=True),
    sa.Column('trial_id', sa.Integer(), nullable=True),
    sa.Column('tune_experiment_id', sa.Integer(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('evaluation', sa.JSON(), nullable=True),
    sa.Column('artifacts', sa.JSON(), nullable=True),
    sa.Column('git_commit', sa.String(), nullable=True),
    sa.Column('git_dirty', sa.Boolean(), nullable=False),
    sa.Column('classes', sa.JSON(), nullable=True),
    sa.Column('created', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    create_index('ix_cdl_model_name_version', 'cdl_model_version', ['name', 'version'], unique=True)
    create_table('cdl_quarantine',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(), nullable=False),
    sa.Column('uid', sa.String(), nullable=False),
    sa.Column('item_id', sa.String(), nullable=False),
    sa.Column('source', sa.String(), nullable=False),
    sa.Column('rule', sa.String(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    create_index(op.f('ix_cdl_quarantine_version'), 'cdl_quarantine', ['version'], unique=False)
    create_table('cdl_review',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('reviewer', sa.String(), nullable=False),
    sa.Column('decision', sa.String(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('automatic', sa.Boolean(), nullable=False),
    sa.Column('created', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    create_index(op.f('ix_cdl_review_name'), 'cdl_review', ['name'], unique=False)
    create_table('cdl_source',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('content_hash', sa.String(), nullable=False),
    sa.Column('items', sa.Integer(), nullable=False),
    sa.Column('imported_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    create_table('cdl_state',
    sa.Column('key', sa.String(), nullable=False),
    sa.Column('value', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    create_table('cdl_step_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(), nullable=False),
    sa.Column('job', sa.String(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('started', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('finished', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('input_fp', sa.String(), nullable=False),
    sa.Column('output_fp', sa.String(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    create_index(op.f('ix_cdl_step_run_step'), 'cdl_step_run', ['step'], unique=False)
    create_table('cdl_transform',
    sa.Column('key', sa.String(), nullable=False),
    sa.Column('dataset_version', sa.String(), nullable=False),
    sa.Column('spec_hash', sa.String(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=True),
    sa.Column('path', sa.String(), nullable=False),
    sa.Column('stats', sa.JSON(), nullable=True),
    sa.Column('created', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    create_index(op.f('ix_cdl_transform_dataset_version'), 'cdl_transform', ['dataset_version'], unique=False)
    create_table('cdl_trial',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('epochs', sa.Integer(), nullable=False),
    sa.Column('started', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('finished', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    create_index(op.f('ix_cdl_trial_experiment_id'), 'cdl_trial', ['experiment_id'], unique=False)
    create_table('cdl_variant',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('variant', sa.String(), nullable=False),
    sa.Column('method', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('artifact', sa.String(), nullable=True),
    sa.Column('size_bytes', sa.Integer(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('bundle', sa.String(), nullable=True),
    sa.Column('created', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    create_index('ix_cdl_variant_model', 'cdl_variant', ['name', 'version', 'variant'], unique=True)
