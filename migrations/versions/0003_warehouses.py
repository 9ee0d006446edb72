"""fulfilment centres: each product ships from one warehouse; order lines copy it;
one shipment per (order, warehouse)

Revision ID: 0003
Revises: 0002
"""

import zlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As models.catalog.WAREHOUSES / warehouse_for when this revision was written.
WAREHOUSES = ("LDN", "MAN", "EDI")


def _warehouse_for(sku: str) -> str:
    return WAREHOUSES[zlib.crc32(sku.encode()) % len(WAREHOUSES)]


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.add_column(
            sa.Column("warehouse", sa.String(length=8), nullable=False, server_default=WAREHOUSES[0])
        )
    with op.batch_alter_table("order_lines") as batch:
        batch.add_column(
            sa.Column("warehouse", sa.String(length=8), nullable=False, server_default=WAREHOUSES[0])
        )
    conn = op.get_bind()
    skus = [row[0] for row in conn.execute(sa.text("SELECT sku FROM products"))]
    products = sa.table("products", sa.column("sku"), sa.column("warehouse"))
    if skus:
        conn.execute(
            sa.update(products)
            .where(products.c.sku == sa.bindparam("s"))
            .values(warehouse=sa.bindparam("w")),
            [{"s": sku, "w": _warehouse_for(sku)} for sku in skus],
        )
    # Order lines copy their product's, in one statement (lines can be millions).
    op.execute(
        sa.text(
            "UPDATE order_lines SET warehouse = (SELECT p.warehouse FROM products p "
            "WHERE p.sku = order_lines.sku)"
        )
    )
    with op.batch_alter_table("shipments") as batch:
        batch.add_column(
            sa.Column("warehouse", sa.String(length=8), nullable=False, server_default=WAREHOUSES[0])
        )
    op.execute(
        sa.text(
            "UPDATE shipments SET warehouse = (SELECT min(l.warehouse) FROM order_lines l "
            "WHERE l.order_id = shipments.order_id) "
            "WHERE EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = shipments.order_id)"
        )
    )
    _replace_shipment_key(conn, ["order_id", "warehouse"], "uq_shipments_order_warehouse")
    op.create_index("ix_order_lines_order", "order_lines", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_order_lines_order", table_name="order_lines")
    _replace_shipment_key(op.get_bind(), ["order_id"], "shipments_order_id_key")
    with op.batch_alter_table("shipments") as batch:
        batch.drop_column("warehouse")
    with op.batch_alter_table("order_lines") as batch:
        batch.drop_column("warehouse")
    with op.batch_alter_table("products") as batch:
        batch.drop_column("warehouse")


def _replace_shipment_key(conn, columns: list[str], name: str) -> None:
    """Make ``columns`` the shipments' unique key. 0001 left the first key unnamed:
    PostgreSQL named it ``shipments_order_id_key``; SQLite can only rebuild the table."""
    if conn.dialect.name != "sqlite":
        old = "uq_shipments_order_warehouse" if columns == ["order_id"] else "shipments_order_id_key"
        op.drop_constraint(old, "shipments", type_="unique")
        op.create_unique_constraint(name, "shipments", columns)
        return
    table = sa.Table(
        "shipments",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("carrier", sa.String(length=32), nullable=False),
        sa.Column("tracking_number", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("warehouse", sa.String(length=8), nullable=False, server_default=WAREHOUSES[0]),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(*columns, name=name),
    )
    with op.batch_alter_table("shipments", copy_from=table, recreate="always"):
        pass
