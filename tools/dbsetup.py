"""Create the database if it is missing and migrate it with Alembic.

``orion migrate [--database-url URL]`` (or ``python -m tools.dbsetup``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parent.parent


def ensure_database(url: str, fresh: bool = False) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist
    (``fresh``: drop it first, closing its connections).

    SQLite creates its file on first connect; only its folder is made here.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if fresh:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database})
        if not exists:
            conn.exec_driver_sql(f'CREATE DATABASE "{parsed.database}"')
    admin.dispose()


def alembic_config(url: str) -> Config:
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Run Alembic migrations on ``url`` up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def prepare_sandbox(database_url: str, sandbox_url: str) -> None:
    """The payment sandbox's tables, complete: in a database of its own, made here;
    beside Orion's tables, migration 0006 made them, and this only adds what a
    sandbox made before 0006 lacks (the ``reference`` column). Run as the role that
    migrates: the workers' roles may not create or alter tables (security issue,
    item 8), so the sandbox must find nothing to do when a worker starts."""
    from payments.sandbox import create_schema

    if sandbox_url != database_url:
        ensure_database(sandbox_url)
    create_schema(sandbox_url)


@click.command("migrate")
@click.option("--database-url", metavar="URL", default=None, help="default: the settings' DATABASE_URL")
def migrate(database_url: str | None) -> int:
    """Create the database if it is missing and migrate it to the newest revision."""
    from config import get_settings

    settings = get_settings()
    url = database_url or settings.database_url
    ensure_database(url)
    upgrade(url)
    if database_url is None:
        prepare_sandbox(url, settings.sandbox_database_url)
    print(f"database ready: {make_url(url).render_as_string(hide_password=True)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from tools.clicommon import run

    return run(migrate, argv, "orion migrate")


if __name__ == "__main__":
    sys.exit(main())
