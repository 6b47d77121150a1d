"""audit_log: result ids as TEXT (an export or a many-face search names thousands of cases)

Revision ID: 0008
Revises: 0007

PostgreSQL refused any record whose result ids passed VARCHAR(8000), about 220 case ids, so
such an export or search failed with "audit unavailable". SQLite never enforced the length.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

LIMIT = 8000


def upgrade() -> None:
    # SQLite stores VARCHAR(n) and TEXT alike (TEXT affinity, no length): nothing to change,
    # and no rebuild of a long log. On PostgreSQL, VARCHAR to TEXT rewrites no row.
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "audit_log",
            "result_ids",
            type_=sa.Text(),
            existing_type=sa.String(LIMIT),
            existing_nullable=False,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    longer = op.get_bind().scalar(
        sa.text(f"SELECT count(*) FROM audit_log WHERE length(result_ids) > {LIMIT}")
    )
    if longer:  # cutting them would break the hash chain
        raise RuntimeError(
            f"audit records naming more than {LIMIT} characters of result ids: {longer}; "
            "they cannot be kept below revision 0008"
        )
    op.alter_column(
        "audit_log",
        "result_ids",
        type_=sa.String(LIMIT),
        existing_type=sa.Text(),
        existing_nullable=False,
    )
