"""Per-component database roles (security issue, item 8): ``deploy/postgres/roles.sql``,
as the postgres container's init script runs it, on the real PostgreSQL in a
throwaway database. The owner role migrates; an application role does the DML the
saga needs (an order, its email, an outbox row whose trigger NOTIFYs, the payment
sandbox's tables made by migration 0006) and no DDL.

Roles belong to the whole cluster: the script's ``prefix`` gives this test roles of
its own, dropped at the end with the database."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from tests.conftest import TEST_DB

ROOT = Path(__file__).resolve().parents[2]
ROLES_SQL = ROOT / "deploy" / "postgres" / "roles.sql"
COMPONENTS = ("owner", "web", "worker", "relay")


@pytest.fixture(scope="module")
def roles() -> Iterator[dict[str, str]]:
    """A fresh database with the script's roles in it; ``{component: url}``."""
    prefix = f"orion_t{uuid.uuid4().hex[:8]}"
    database = f"{prefix}_db"
    server = make_url(TEST_DB)
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    passwords = {c: uuid.uuid4().hex for c in COMPONENTS}
    try:
        done = subprocess.run(
            [
                "psql",
                "--no-psqlrc",
                "-h",
                server.host or "127.0.0.1",
                "-p",
                str(server.port or 5432),
                "-U",
                server.username or "postgres",
                "-d",
                database,
                "-v",
                f"prefix={prefix}",
                *[arg for c in COMPONENTS for arg in ("-v", f"{c}_password={passwords[c]}")],
                "-f",
                str(ROLES_SQL),
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        yield {
            c: server.set(
                username=f"{prefix}_{c}", password=passwords[c], database=database
            ).render_as_string(hide_password=False)
            for c in COMPONENTS
        }
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for role in (*COMPONENTS, "app"):
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{prefix}_{role}"')
        admin.dispose()


@pytest.fixture(scope="module")
def migrated(roles: dict[str, str]) -> dict[str, str]:
    from tools.dbsetup import upgrade

    upgrade(roles["owner"])
    return roles


def _place_order(session: Session, uid: str) -> uuid.UUID:
    from models import Order, User

    user = User(email=f"{uid}@roles.example", name="Role Test", password_hash="x")
    session.add(user)
    session.flush()
    order = Order(
        customer_id=user.id,
        subtotal=Decimal("12.50"),
        total=Decimal("12.50"),
        shipping_address={"name": "R", "line1": "1 Road", "city": "C", "postal_code": "1", "country": "GB"},
        payment_token="tok_visa",
    )
    session.add(order)
    session.flush()
    return order.id


@pytest.mark.parametrize("component", ["web", "worker", "relay"])
def test_an_application_role_does_the_saga_s_dml_and_no_ddl(migrated, component, uid):
    from mail import outbox
    from mail.templates import CONFIRMATION
    from models import Order
    from models.outbox import enqueue

    engine = create_engine(migrated[component])
    try:
        with Session(engine) as session, session.begin():
            order_id = _place_order(session, f"{uid}-{component}")
            enqueue(session, "order.placed", {"order_id": str(order_id)})
            message = outbox.claim(session, order_id, CONFIRMATION)
            assert isinstance(message, outbox.OutgoingEmail)
            outbox.mark_sent(session, message)
        with Session(engine) as session:
            assert session.scalar(select(Order.status).where(Order.id == order_id)) == "pending"
            assert session.execute(text("SELECT current_user")).scalar_one().endswith(f"_{component}")
        for ddl in (
            "CREATE TABLE intruder (id int)",
            "DROP TABLE orders",
            "ALTER TABLE orders ADD COLUMN intruder int",
            "TRUNCATE orders CASCADE",
            "CREATE SCHEMA intruder",
        ):
            with (
                engine.connect() as conn,
                pytest.raises(ProgrammingError, match=r"permission denied|must be owner"),
            ):
                conn.execute(text(ddl))
    finally:
        engine.dispose()


def test_the_payment_sandbox_runs_on_an_application_role(migrated, uid):
    """The sandbox creates its tables on first use where they are missing; in Orion's
    database migration 0006 made them as the owner, so a worker's role, which may
    not create tables, only reads and writes them."""
    from payments.sandbox import SandboxProvider

    provider = SandboxProvider(migrated["worker"])
    approved = provider.authorize(f"k-{uid}", f"o-{uid}", "tok_visa", Decimal("12.50"), "GBP")
    assert approved.approved and approved.reference
    captured = provider.capture(f"c-{uid}", approved.reference, Decimal("12.50"))
    assert captured.approved


def test_only_the_owner_migrates(migrated):
    """An application role cannot change the schema through Alembic either: undoing
    migration 0006 (dropping the sandbox's tables) is refused."""
    from alembic import command

    from tools.dbsetup import alembic_config

    with pytest.raises(ProgrammingError, match="must be owner"):
        command.downgrade(alembic_config(migrated["web"]), "0005")


def test_a_sandbox_made_before_0006_is_completed_by_the_migrate_step_not_by_a_worker(migrated, uid):
    """A sandbox a worker made before migration 0006 lacks ``reference``; the sandbox
    added it when a worker started, which a worker's role may not do. ``orion
    migrate`` (the owner) completes it, and the worker then finds nothing to alter.
    Last in this module: it changes the shared database's sandbox table."""
    from payments.sandbox import SandboxProvider
    from tools.dbsetup import prepare_sandbox

    owner = create_engine(migrated["owner"])
    try:
        with owner.begin() as conn:
            conn.execute(text("ALTER TABLE sandbox_operations DROP COLUMN reference"))
    finally:
        owner.dispose()
    prepare_sandbox(migrated["owner"], migrated["owner"])
    provider = SandboxProvider(migrated["worker"])
    assert provider.authorize(f"k2-{uid}", f"o2-{uid}", "tok_visa", Decimal("1.00"), "GBP").reference
