"""outbox relay wake-up: on PostgreSQL, a statement trigger NOTIFYs channel
``orion_outbox`` when outbox rows are inserted (delivered at commit, once per
transaction), so the relay (``python -m worker.relay``) publishes without polling

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "orion_outbox"  # as worker.relay.CHANNEL when this revision was written


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite (embedded): the relay polls
    op.execute(f"""
        CREATE OR REPLACE FUNCTION orion_outbox_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION orion_outbox_notify()""")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS orion_outbox_notify()")
