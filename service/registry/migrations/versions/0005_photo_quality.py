"""photos: the enrolled face's quality issues (a poor face is enrolled, not refused)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Plain ALTER TABLE on both dialects (SQLite 3.35+ drops columns): a batch rebuild would drop
# and recreate ``photos``, whose DROP cascades to the templates on SQLite.


def upgrade() -> None:
    # Existing photos keep NULL: they were enrolled when faces with issues were refused.
    op.add_column("photos", sa.Column("quality_issues", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("photos", "quality_issues")
