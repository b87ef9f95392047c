"""fair scheduling: job priority and queued-at time, indexes for fair claims

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 04:05:00

Adds ``jobs.priority`` (the routing rule's priority rank: 0 urgent, 1 routine, 2 low; existing
rows become routine) and ``jobs.queued_at`` (when the job last entered ``queued``; existing
queued jobs get their creation time), with the indexes the fair claim reads: queued jobs by
state, priority, calling AE title and id, and the last start per calling AE title.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('priority', sa.SmallInteger(), server_default='1', nullable=False)
        )
        batch_op.add_column(sa.Column('queued_at', sa.DateTime(), nullable=True))
        batch_op.create_index(
            'ix_jobs_state_priority_caller_id',
            ['state', 'priority', 'calling_ae_title', 'id'],
            unique=False,
        )
        batch_op.create_index(
            'ix_jobs_caller_started_at', ['calling_ae_title', 'started_at'], unique=False
        )
    op.execute("UPDATE jobs SET queued_at = created_at WHERE state = 'queued'")


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_caller_started_at')
        batch_op.drop_index('ix_jobs_state_priority_caller_id')
        batch_op.drop_column('queued_at')
        batch_op.drop_column('priority')
