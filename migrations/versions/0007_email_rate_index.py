"""emails per address: an index on ``email_outbox (to_address, created_at)`` for the
email step's one query that counts what went to an address in the last hour
(``EMAIL_MAX_PER_ADDRESS_PER_HOUR``, security issue item 9); an email over the
limit is kept with status ``suppressed`` (a string column: no schema change)

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_email_outbox_to_address_created", "email_outbox", ["to_address", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_email_outbox_to_address_created", table_name="email_outbox")
