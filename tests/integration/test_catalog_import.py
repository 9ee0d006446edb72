"""``python -m tools.catalog`` on a small generated CSV, into the real PostgreSQL test database."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from models import Inventory, InventoryLedger, Product, unit_of_work
from tests.unit.test_retail_data import line, write_csv
from tools.catalog import main, stock_levels


def fresh_codes(n: int) -> list[str]:
    """``n`` product codes (5 digits + 2 letters) that no product in the database has yet."""
    rng, codes = random.Random(), []
    while len(codes) < n:
        code = f"{rng.randrange(100000):05d}{rng.choice('ABCDEFGHJK')}{rng.choice('QRSTUVWXYZ')}"
        with unit_of_work() as session:
            if session.get(Product, code) is None and code not in codes:
                codes.append(code)
    return codes


@pytest.fixture
def dataset(tmp_path):
    """A CSV with two products (one also in lower case), an unpriced code, a duplicate row,
    a price variation, a cancellation and non-product codes. Returns (path, a, b, unpriced)."""
    a, b, unpriced = fresh_codes(3)
    rows = [
        line("536365", a, "6", "2.55", description="RED MUG "),
        line("536365", a, "6", "2.55", description="RED MUG "),  # exact duplicate
        line("536365", "POST", "1", "18.00", description="POSTAGE"),
        line("536366", b, "2", "3.39", description="BLUE BOWL"),
        line("536366", a, "1", "2.95", description="RED MUG"),  # price variation
        line("536367", b, "3", "3.39", description=""),
        line("536367", b.lower(), "1", "3.39", description="blue bowl"),  # same product
        line("536368", "M", "1", "5.00", description="Manual"),
        line("536368", unpriced, "-4", "0", customer="", description="damaged"),
        line("C536369", a, "-2", "2.55", description="RED MUG"),
        line("536370", "gift_0001_20", "1", "16.67", description="Dotcomgiftshop Gift Voucher £20.00"),
    ]
    return write_csv(tmp_path / "retail.csv.gz", rows), a, b, unpriced


def stock(*skus):
    with unit_of_work() as session:
        products = {
            p.sku: (p.name, p.unit_price, p.currency)
            for p in session.scalars(select(Product).where(Product.sku.in_(skus)))
        }
        levels = {
            i.sku: (i.on_hand, i.reserved, i.reorder_point, i.reorder_quantity)
            for i in session.scalars(select(Inventory).where(Inventory.sku.in_(skus)))
        }
        ledger = [
            (r.sku, r.delta, r.on_hand_after, r.reason, r.reference)
            for r in session.scalars(
                select(InventoryLedger).where(InventoryLedger.sku.in_(skus)).order_by(InventoryLedger.sku)
            )
        ]
    return products, levels, ledger


def test_import_creates_products_stock_and_ledger(dataset, database, capsys):
    path, a, b, unpriced = dataset
    assert main(["--data", str(path), "--database-url", database]) == 0
    products, levels, ledger = stock(a, b, unpriced)
    assert products == {a: ("RED MUG", Decimal("2.55"), "GBP"), b: ("BLUE BOWL", Decimal("3.39"), "GBP")}
    # a: 13 units ordered, the most popular SKU: half of that. b: 6 ordered, MIN_STOCK 10.
    assert levels == {a: (6, 0, 1, 12), b: (10, 0, 1, 12)}
    assert sorted(ledger) == sorted(
        [(a, 6, 6, "initial stock", "catalog-import"), (b, 10, 10, "initial stock", "catalog-import")]
    )
    out = capsys.readouterr().out
    assert "products: 2 (inserted 2, updated 0, unchanged 0)" in out
    assert "16 units on hand" in out
    assert "skipped: 3 non-product codes, 3 rows: POST 1, M 1, gift_0001_20 1" in out
    assert "skipped: 1 product codes never sold at a positive price" in out


def test_rerunning_changes_nothing(dataset, database, capsys):
    path, a, b, _ = dataset
    assert main(["--data", str(path), "--database-url", database]) == 0
    before = stock(a, b)
    assert main(["--data", str(path), "--database-url", database]) == 0
    assert stock(a, b) == before
    assert "products: 2 (inserted 0, updated 0, unchanged 2)" in capsys.readouterr().out


def test_rerun_restores_catalog_fields_but_never_resets_stock(dataset, database, capsys):
    path, a, b, _ = dataset
    assert main(["--data", str(path), "--database-url", database]) == 0
    with unit_of_work() as session:
        session.execute(update(Product).where(Product.sku == a).values(unit_price=Decimal("9.99")))
        session.execute(update(Inventory).where(Inventory.sku == b).values(on_hand=3))
    assert main(["--data", str(path), "--database-url", database]) == 0
    products, levels, ledger = stock(a, b)
    assert products[a][1] == Decimal("2.55") and levels[b][0] == 3
    assert len(ledger) == 2
    assert "(inserted 0, updated 1, unchanged 1)" in capsys.readouterr().out


def test_bad_input_exits_nonzero_naming_file_and_field(tmp_path, database, capsys):
    bad = write_csv(tmp_path / "bad.csv.gz", [line(), line(price="two pounds")])
    assert main(["--data", str(bad), "--database-url", database]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("bad.csv.gz:3: UnitPrice: bad value 'two pounds'") and "\n" not in err
    assert main(["--data", str(tmp_path / "absent.csv.gz"), "--database-url", database]) == 1
    assert "absent.csv.gz: no such file" in capsys.readouterr().err


def test_stock_rule_shorts_the_top_five_percent_by_early_demand():
    skus = [f"{n:05d}" for n in range(40)]
    early = Counter({sku: 100 + n for n, sku in enumerate(skus)})
    year = Counter({sku: 4 * early[sku] + 8 for sku in skus})
    year["00000"], early["00001"] = 52_000, 0
    levels = stock_levels(skus, year, early)
    assert levels["00039"][0] == 69 and levels["00038"][0] == 69  # 2 of 40: half of early demand
    assert levels["00037"][0] == math_ceil_quarter(year["00037"])  # a quarter of the year
    assert levels["00001"] == (103, 8, 32)  # no early demand: 412 a year
    assert levels["00000"] == (13_000, 1000, 4000)  # one and four weeks of demand
    others = {sku: level for sku, level in levels.items() if sku not in ("00039", "00038")}
    assert all(on_hand >= early[sku] for sku, (on_hand, _, _) in others.items())


def math_ceil_quarter(units: int) -> int:
    return -(-units // 4)
