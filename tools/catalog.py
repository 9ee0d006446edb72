"""Import the bundled catalog: products, initial stock and its ledger rows.

``orion catalog [--data PATH] [--database-url URL]`` (or ``python -m tools.catalog``)

Idempotent: products are upserted (name, price, currency); inventory rows are
only ever inserted, each with its ``initial stock`` ledger row (SPEC guarantee
3), so a re-run changes nothing. The stock rule is in ``stock_levels`` and
docs/replay.md. Exits 1 with a one-line message on bad input or a database error.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import click
from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.catalog import warehouse_for
from tools.clicommon import run as run_command
from tools.retail_data import (
    DataError,
    Invoice,
    default_data_path,
    is_product_code,
    read_invoices,
    sale_lines,
)

CURRENCY, CENT = "GBP", Decimal("0.01")
EARLY_INVOICES = 2000  # the early window: the first 2,000 invoices that yield an order
POPULAR_SHARE = 0.05  # this share of SKUs, ranked by early demand, is stocked short
POPULAR_COVER = 0.5  # ...with this fraction of their early demand
QUARTER = 4  # other SKUs: a quarter of the year's demand...
MIN_STOCK = 10  # ...and at least this many units
LEDGER_REASON, LEDGER_REFERENCE = "initial stock", "catalog-import"


@dataclass
class Scan:
    """Per-SKU facts gathered in one pass over the dataset."""

    rows: int = 0
    invoices: int = 0
    names: Counter = field(default_factory=Counter)  # (sku, trimmed description) -> rows
    prices: Counter = field(default_factory=Counter)  # (sku, positive price) -> rows
    year: Counter = field(default_factory=Counter)  # units ordered in the whole file
    early: Counter = field(default_factory=Counter)  # units ordered in the early window
    skipped: Counter = field(default_factory=Counter)  # non-product code -> rows
    products: Counter = field(default_factory=Counter)  # product sku -> rows


@dataclass(frozen=True)
class Entry:
    """One product with its initial stock."""

    sku: str
    name: str
    unit_price: Decimal
    on_hand: int
    reorder_point: int
    reorder_quantity: int


def scan(invoices: Iterable[Invoice], early_invoices: int = EARLY_INVOICES) -> Scan:
    """Count descriptions, positive prices and demand (units the replay would order) per SKU."""
    out, orders = Scan(), 0
    for invoice in invoices:
        out.invoices += 1
        out.rows += len(invoice.rows)
        for row in invoice.rows:
            _note_row(out, row)
        lines = sale_lines(invoice).lines
        orders += bool(lines)
        for sku, quantity in lines:
            out.year[sku] += quantity
            if orders <= early_invoices:
                out.early[sku] += quantity
    return out


def _note_row(out: Scan, row) -> None:
    if not is_product_code(row.code):
        out.skipped[row.code] += 1
        return
    out.products[row.sku] += 1
    name = row.description.strip()
    if name:
        out.names[row.sku, name] += 1
    if row.unit_price > 0:
        out.prices[row.sku, row.unit_price] += 1


def modal_price(prices: Counter) -> Decimal | None:
    """The most frequent price in pence (rounded half up); the lowest of equally frequent ones.

    ``prices`` counts prices by value; prices under half a penny are ignored.
    Returns None when no price is left.
    """
    pence: Counter = Counter()
    for price, n in prices.items():
        rounded = price.quantize(CENT, ROUND_HALF_UP)
        if rounded > 0:
            pence[rounded] += n
    return min(pence, key=lambda p: (-pence[p], p)) if pence else None


def stock_levels(skus: Iterable[str], year: Counter, early: Counter) -> dict[str, tuple[int, int, int]]:
    """``{sku: (on_hand, reorder_point, reorder_quantity)}``, deterministic.

    The top ``POPULAR_SHARE`` of SKUs by early demand (ties: year demand, then
    sku) get ``POPULAR_COVER`` of their early demand, so they run short in a
    replay of the early window. Every other SKU gets a quarter of its year's
    demand, never less than its early demand nor ``MIN_STOCK``. Reorder point:
    one week of average demand (min 1); reorder quantity: four weeks (min 12).
    """
    ranked = sorted(skus, key=lambda s: (-early[s], -year[s], s))
    popular = {s for s in ranked[: math.ceil(len(ranked) * POPULAR_SHARE)] if early[s] > 0}
    levels = {}
    for sku in ranked:
        if sku in popular:
            on_hand = math.floor(early[sku] * POPULAR_COVER)
        else:
            on_hand = max(MIN_STOCK, math.ceil(year[sku] / QUARTER), early[sku])
        levels[sku] = (on_hand, max(1, math.ceil(year[sku] / 52)), max(12, math.ceil(year[sku] / 13)))
    return levels


def build_catalog(facts: Scan) -> tuple[list[Entry], list[str]]:
    """Entries for every product code sold at a positive price, and the codes without one."""
    names, prices = _by_sku(facts.names), _by_sku(facts.prices)
    priced = sorted(sku for sku in prices if modal_price(prices[sku]) is not None)
    unpriced = sorted(set(facts.products) - set(priced))
    levels = stock_levels(priced, facts.year, facts.early)
    entries = [
        Entry(sku, _name(names.get(sku), sku), modal_price(prices[sku]), *levels[sku]) for sku in priced
    ]
    return entries, unpriced


def _by_sku(pairs: Counter) -> dict[str, Counter]:
    """``{(sku, value): n}`` -> ``{sku: Counter({value: n})}``, keeping first-seen order."""
    out: dict[str, Counter] = defaultdict(Counter)
    for (sku, value), n in pairs.items():
        out[sku][value] = n
    return out


def _name(names: Counter | None, sku: str) -> str:
    """The most frequent trimmed description (first seen wins a tie); the sku if none."""
    return names.most_common(1)[0][0][:200] if names else sku


@dataclass(frozen=True)
class Result:
    inserted: int
    updated: int
    unchanged: int
    stocked: int
    units: int


def import_catalog(session: Session, entries: list[Entry]) -> Result:
    """Upsert products and insert missing inventory rows with their ledger rows, in bulk.

    Raises sqlalchemy IntegrityError if another import inserted the same rows meanwhile.
    """
    from models import Inventory, InventoryLedger, Product

    existing = {p.sku: p for p in session.scalars(select(Product))}
    stocked = set(session.scalars(select(Inventory.sku)))
    new = [e for e in entries if e.sku not in existing]
    changed = [e for e in entries if e.sku in existing and _differs(existing[e.sku], e)]
    if new:
        session.execute(insert(Product), [_product(e) for e in new])
    if changed:
        session.execute(update(Product), [_product(e) for e in changed])
    to_stock = [e for e in entries if e.sku not in stocked]
    if to_stock:
        session.execute(
            insert(Inventory),
            [
                {
                    "sku": e.sku,
                    "on_hand": e.on_hand,
                    "reserved": 0,
                    "reorder_point": e.reorder_point,
                    "reorder_quantity": e.reorder_quantity,
                }
                for e in to_stock
            ],
        )
        session.execute(
            insert(InventoryLedger),
            [
                {
                    "sku": e.sku,
                    "delta": e.on_hand,
                    "on_hand_after": e.on_hand,
                    "reason": LEDGER_REASON,
                    "reference": LEDGER_REFERENCE,
                }
                for e in to_stock
            ],
        )
    return Result(
        len(new),
        len(changed),
        len(entries) - len(new) - len(changed),
        len(to_stock),
        sum(e.on_hand for e in to_stock),
    )


def _product(e: Entry) -> dict:
    return {
        "sku": e.sku,
        "name": e.name,
        "unit_price": e.unit_price,
        "currency": CURRENCY,
        "warehouse": warehouse_for(e.sku),
    }


def _differs(product, e: Entry) -> bool:
    return (product.name, Decimal(product.unit_price), product.currency) != (e.name, e.unit_price, CURRENCY)


def run(data: Path, database_url: str) -> str:
    """Scan ``data``, import into ``database_url``; return the summary text."""
    from models.db import make_engine

    started = time.monotonic()
    facts = scan(read_invoices(data))
    entries, unpriced = build_catalog(facts)
    scanned = time.monotonic()
    engine = make_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            result = import_catalog(session, entries)
    finally:
        engine.dispose()
    return summary(data, facts, entries, unpriced, result, (scanned - started, time.monotonic() - scanned))


def summary(
    data: Path,
    facts: Scan,
    entries: list[Entry],
    unpriced: list[str],
    result: Result,
    seconds: tuple[float, float],
) -> str:
    """The report printed by ``main``."""
    skipped = ", ".join(f"{code} {n}" for code, n in facts.skipped.most_common())
    return "\n".join(
        [
            f"read {data}: {facts.rows:,} rows, {facts.invoices:,} invoices",
            f"products: {len(entries):,} (inserted {result.inserted:,}, updated {result.updated:,},"
            f" unchanged {result.unchanged:,})",
            f"inventory: {result.stocked:,} SKUs stocked now, {result.units:,} units on hand"
            f" (catalog total {sum(e.on_hand for e in entries):,} by the stock rule)",
            f"skipped: {len(facts.skipped)} non-product codes,"
            f" {sum(facts.skipped.values()):,} rows: {skipped}",
            f"skipped: {len(unpriced)} product codes never sold at a positive price",
            f"done in {sum(seconds):.1f}s (reading {seconds[0]:.1f}s, database {seconds[1]:.1f}s)",
        ]
    )


@click.command("catalog")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="dataset (default: $ORION_DATASET or the bundled file)",
)
@click.option("--database-url", metavar="URL", default=None, help="default: the settings' DATABASE_URL")
def command(data: Path | None, database_url: str | None) -> int:
    """Import the catalog (products, prices, stock) from the Online Retail dataset."""
    try:
        url = database_url or _settings_url()
        print(run(data or default_data_path(), url))
    except DataError as exc:
        print(f"catalog: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"catalog: database error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(command, argv, "orion catalog")


def _settings_url() -> str:
    from config import get_settings

    return get_settings().database_url


if __name__ == "__main__":
    sys.exit(main())
