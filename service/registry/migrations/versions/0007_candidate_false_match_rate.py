"""candidates: the estimated false-match rate against the gallery, which orders the queue

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
    # Existing candidates keep NULL (no rate was estimated): the queue puts them after the
    # rated ones, by score.
    op.add_column("candidates", sa.Column("false_match_rate", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("candidates", "false_match_rate")
