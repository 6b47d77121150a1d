"""external refs are unique per organisation, not across organisations

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# SQLite reflects the old constraint without a name; the convention gives it one to drop.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    old = "uq_cases_external_ref" if sqlite else "cases_external_ref_key"
    with op.batch_alter_table("cases", naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint(old, type_="unique")
        batch_op.create_unique_constraint("uq_cases_org_ref", ["org_id", "external_ref"])


def downgrade() -> None:
    with op.batch_alter_table("cases", naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint("uq_cases_org_ref", type_="unique")
        batch_op.create_unique_constraint("uq_cases_external_ref", ["external_ref"])
