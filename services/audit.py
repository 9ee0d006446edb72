"""SPEC's guarantees checked over the database: the queries and ``audit``.

- guarantee 3, per SKU: ``on_hand >= 0``, ``reserved >= 0``, ``reserved`` equals
  the sum of held reservations, and ``on_hand`` equals the sum of its ledger rows;
- guarantee 2: no order has two captures or two refunds, and no refund lacks a capture;
- guarantee 4 (emails): no order has two emails of one template.

Used by ``python -m tools.audit`` and the beat job ``scheduled.audit_inventory``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

STOCK_CHECKS = ("negative_stock", "reserved_mismatch", "unexplained_on_hand")

CHECKS = {
    "negative_stock": """
        SELECT i.sku, i.on_hand, i.reserved FROM inventory i
        WHERE (i.on_hand < 0 OR i.reserved < 0) AND {skus}""",
    "reserved_mismatch": """
        SELECT i.sku, i.reserved, COALESCE(SUM(r.quantity), 0) AS held
        FROM inventory i LEFT JOIN reservations r ON r.sku = i.sku AND r.status = 'held'
        WHERE {skus} GROUP BY i.sku, i.reserved HAVING i.reserved <> COALESCE(SUM(r.quantity), 0)""",
    "unexplained_on_hand": """
        SELECT i.sku, i.on_hand, COALESCE(SUM(l.delta), 0) AS ledger
        FROM inventory i LEFT JOIN inventory_ledger l ON l.sku = i.sku
        WHERE {skus} GROUP BY i.sku, i.on_hand HAVING i.on_hand <> COALESCE(SUM(l.delta), 0)""",
    "double_capture_or_refund": """
        SELECT order_id, kind, COUNT(*) AS n FROM payments
        WHERE kind IN ('capture', 'refund') AND status = 'succeeded'
        GROUP BY order_id, kind HAVING COUNT(*) > 1""",
    "refund_without_capture": """
        SELECT r.order_id FROM payments r WHERE r.kind = 'refund' AND NOT EXISTS (
          SELECT 1 FROM payments c WHERE c.order_id = r.order_id AND c.kind = 'capture'
          AND c.status = 'succeeded')""",
    "duplicate_email": """
        SELECT order_id, template, COUNT(*) AS n FROM email_outbox
        GROUP BY order_id, template HAVING COUNT(*) > 1""",
}
TOTALS = {
    "skus": "SELECT COUNT(*) FROM inventory",
    "orders": "SELECT COUNT(*) FROM orders",
    "captures": "SELECT COUNT(*) FROM payments WHERE kind = 'capture' AND status = 'succeeded'",
    "confirmation_emails_sent": "SELECT COUNT(*) FROM email_outbox WHERE template = "
    "'order_confirmation' AND status = 'sent'",
}


def audit(
    session: Session, skus: list[str] | None = None, checks: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """``{"violations": {check: [rows]}, "totals": {...}}``; empty lists mean all is well.

    ``skus`` limits the stock checks to those SKUs (default: every SKU);
    ``checks`` runs only those checks (default: all).
    """
    scope = "i.sku IN :skus" if skus else "1 = 1"
    params = {"skus": tuple(skus)} if skus else {}
    violations = {}
    for name, sql in CHECKS.items():
        if checks is not None and name not in checks:
            continue
        query = text(sql.replace("{skus}", scope))
        if skus and "{skus}" in sql:
            query = query.bindparams(bindparam("skus", expanding=True))
        rows = session.execute(query, params if "{skus}" in sql else {})
        violations[name] = [dict(row._mapping) for row in rows]
    totals = {name: session.scalar(text(sql)) for name, sql in TOTALS.items()}
    return {"violations": violations, "totals": totals}
