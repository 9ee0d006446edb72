"""A slice of the real invoices, replayed through the platform (on the embedded
default, and in services mode on PostgreSQL, RabbitMQ and Redis), drives popular
SKUs below their reorder point; beat restocks them (the platforms run the restock
job every 2 s with a 3 s supplier lead time) and the ledger explains every unit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.conftest import REPO
from tests.support.factories import eventually


def query(platform, sql: str, **params) -> list[tuple]:
    url = platform.get("database") or f"sqlite:///{platform['data_dir'] / 'orion.db'}"
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


@pytest.fixture(params=["embedded", "services"])
def any_platform(request):
    return request.getfixturevalue("platform" if request.param == "embedded" else "services_platform")


def test_a_replay_slice_ends_with_low_skus_restocked_and_every_unit_explained(any_platform, tmp_path):
    platform = any_platform
    summary_path = tmp_path / "replay.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.replay",
            "--base-url",
            platform["base"],
            "--limit",
            "60",
            "--concurrency",
            "4",
            "--tokens",
            "tok_visa=1",
            "--no-progress",
            "--timeout",
            "600",
            "--json-out",
            str(summary_path),
        ],
        cwd=REPO,
        env=platform["env"],
        check=True,
        capture_output=True,
    )
    summary = json.loads(summary_path.read_text())
    assert summary["orders"]["placed"] >= 50 and summary["all_final"]

    def restocked():
        return query(platform, "SELECT sku, quantity FROM purchase_orders WHERE status = 'received'")

    received = eventually(restocked, timeout=60, interval=1)
    for sku, quantity in received:
        ledger = query(
            platform, "SELECT reason, delta FROM inventory_ledger WHERE sku = :sku ORDER BY id", sku=sku
        )
        assert ("restock", quantity) in ledger
        before = ledger[: ledger.index(("restock", quantity))]
        assert any(reason == "shipment" for reason, _ in before), "the replay's orders took it low"
        assert {reason for reason, _ in ledger} <= {
            "initial stock",
            "shipment",
            "shipment cancelled",
            "restock",
        }, ledger
    unexplained = query(
        platform,
        """
        SELECT i.sku FROM inventory i LEFT JOIN inventory_ledger l ON l.sku = i.sku
        GROUP BY i.sku, i.on_hand HAVING i.on_hand <> COALESCE(SUM(l.delta), 0)""",
    )
    assert unexplained == [], "every unit on hand is explained by the ledger"
    mismatched = query(
        platform,
        """
        SELECT i.sku FROM inventory i LEFT JOIN reservations r ON r.sku = i.sku AND r.status = 'held'
        GROUP BY i.sku, i.reserved HAVING i.reserved <> COALESCE(SUM(r.quantity), 0)""",
    )
    assert mismatched == []
