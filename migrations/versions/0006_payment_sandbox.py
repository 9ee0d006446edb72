"""payment sandbox tables made by the migration, not by the first worker to need them
(issue 9: worker processes raced to create them on a fresh database)

The sandbox stands in for an external provider; in services mode its tables live
beside Orion's (``PAYMENT_SANDBOX_URL`` unset). A database where a worker already
made them keeps them as they are (``payments.sandbox`` still adds a missing
``reference`` column at start-up).

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "sandbox_operations" not in existing:
        op.create_table(
            "sandbox_operations",
            sa.Column("idempotency_key", sa.String(128), primary_key=True),
            sa.Column("operation", sa.String(16), nullable=False),
            sa.Column("target", sa.String(64), nullable=True),
            sa.Column("token", sa.String(64), nullable=True),
            sa.Column("amount", sa.Numeric(12, 2), nullable=True),
            sa.Column("result", sa.JSON(), nullable=False),
            sa.Column("reference", sa.String(64), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_sandbox_operations_target", "sandbox_operations", ["target"])
        op.create_index("ix_sandbox_operations_reference", "sandbox_operations", ["reference"])
    if "sandbox_call_counts" not in existing:
        op.create_table(
            "sandbox_call_counts",
            sa.Column("order_ref", sa.String(64), primary_key=True),
            sa.Column("operation", sa.String(16), primary_key=True),
            sa.Column("count", sa.Integer(), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("sandbox_call_counts")
    op.drop_index("ix_sandbox_operations_reference", table_name="sandbox_operations")
    op.drop_index("ix_sandbox_operations_target", table_name="sandbox_operations")
    op.drop_table("sandbox_operations")
