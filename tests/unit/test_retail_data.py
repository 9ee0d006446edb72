"""Reading the Online Retail CSV: typed rows, invoices, product codes, sale lines, errors."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import datetime
from decimal import Decimal

import pytest

from tools.retail_data import (
    HEADER,
    MAX_LINES,
    DataError,
    Invoice,
    Row,
    default_data_path,
    group_invoices,
    is_product_code,
    read_invoices,
    read_rows,
    sale_lines,
)


def write_csv(path, rows, header=HEADER):
    """Write ``rows`` (tuples of 8 strings) as gzip CSV (or plain CSV unless the name ends .gz)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def line(
    invoice="536365",
    code="85123A",
    qty="6",
    price="2.55",
    customer="17850",
    description="WHITE HANGING HEART T-LIGHT HOLDER",
    at="2010-12-01 08:26:00",
    country="United Kingdom",
):
    return (invoice, code, description, qty, at, price, customer, country)


def row(code="85123A", qty=6, price="2.55", invoice="536365", customer="17850") -> Row:
    return Row(
        invoice,
        code,
        "X",
        qty,
        datetime(2010, 12, 1, 8, 26),
        Decimal(price),
        customer,
        "United Kingdom",
        2,
        code.upper(),
    )


def test_rows_are_typed_and_keep_quoted_commas(tmp_path):
    path = write_csv(
        tmp_path / "d.csv.gz",
        [
            line(description='SET OF 3 CAKE TINS, "PANTRY" DESIGN', price="4.95"),
            line(customer="", qty="-2", code="85123a"),
        ],
    )
    first, second = list(read_rows(path))
    assert first.description == 'SET OF 3 CAKE TINS, "PANTRY" DESIGN'
    assert (first.quantity, first.unit_price, first.customer_id) == (6, Decimal("4.95"), "17850")
    assert first.at == datetime(2010, 12, 1, 8, 26)
    assert (second.customer_id, second.quantity, second.sku, second.line) == (None, -2, "85123A", 3)


def test_invoices_group_consecutive_rows_and_rejoin_a_short_interruption():
    rows = [row(invoice="1"), row(invoice="1"), row(invoice="C2"), row(invoice="1"), row(invoice="3")]
    invoices = list(group_invoices(rows))
    assert [(i.number, len(i.rows), i.part) for i in invoices] == [("1", 3, 1), ("C2", 1, 1), ("3", 1, 1)]


def test_an_invoice_number_reappearing_much_later_becomes_a_second_part():
    numbers = ["1"] + [str(n) for n in range(10, 30)] + ["1"]
    parts = [(i.number, i.part) for i in group_invoices(row(invoice=n) for n in numbers)]
    assert parts[0] == ("1", 1) and parts[-1] == ("1", 2)


@pytest.mark.parametrize("code", ["85123A", "22423", "15056BL", "85123a", "DCGSSGIRL", "DCGS0003"])
def test_product_codes(code):
    assert is_product_code(code)


@pytest.mark.parametrize(
    "code",
    [
        "POST",
        "DOT",
        "C2",
        "M",
        "m",
        "D",
        "S",
        "B",
        "BANK CHARGES",
        "AMAZONFEE",
        "CRUK",
        "PADS",
        "gift_0001_20",
        "DCGS0073",
        "1234",
        "123456",
        "12345ABC",
    ],
)
def test_non_product_codes(code):
    assert not is_product_code(code)


def test_sale_lines_skip_non_products_unpriced_and_negative_rows_and_merge_nothing():
    invoice = Invoice(
        "536365",
        (
            row(),
            row("POST", 1, "18"),
            row("22423", 2, "0"),
            row("22423", -3),
            row(),
            row("84029G", 2000),
            row("84029E", 0),
        ),
    )
    sale = sale_lines(invoice)
    assert sale.lines == [("85123A", 6), ("85123A", 6), ("84029G", 1000), ("84029E", 1)]
    assert (sale.non_product, sale.not_priced, sale.negative_quantity, sale.clamped) == (1, 1, 1, 2)


def test_sale_lines_keep_the_first_hundred_lines():
    invoice = Invoice("536365", tuple(row(f"{20000 + n}") for n in range(MAX_LINES + 7)))
    sale = sale_lines(invoice)
    assert len(sale.lines) == MAX_LINES and sale.dropped == 7
    assert sale.lines[-1] == (f"{20000 + MAX_LINES - 1}", 6)


def test_cancellations_and_adjustments_yield_no_sale_lines():
    assert sale_lines(Invoice("C536379", (row(qty=-1, invoice="C536379"),))).lines == []
    assert sale_lines(Invoice("A563185", (row("B", 1, "11062.06", invoice="A563185"),))).lines == []


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.csv\.gz: no such file"):
        list(read_rows(tmp_path / "nowhere.csv.gz"))


def test_bad_header_is_named(tmp_path):
    path = write_csv(tmp_path / "d.csv.gz", [line()], header=(*HEADER[:-1], "Land"))
    with pytest.raises(DataError, match=r"d\.csv\.gz:1: bad header"):
        list(read_rows(path))


def test_bad_field_names_line_and_field(tmp_path):
    path = write_csv(tmp_path / "d.csv", [line(), line(qty="six")])
    with pytest.raises(DataError, match=r"d\.csv:3: Quantity: bad value 'six'"):
        list(read_rows(path))


def test_wrong_field_count_names_the_line(tmp_path):
    path = write_csv(tmp_path / "d.csv", [line(), line()[:5]])
    with pytest.raises(DataError, match=r"d\.csv:3: 5 fields, expected 8"):
        list(read_rows(path))


def test_corrupt_gzip_is_named(tmp_path):
    path = write_csv(tmp_path / "d.csv.gz", [line(invoice=str(536365 + n), qty=str(n)) for n in range(3000)])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated download
    with pytest.raises(DataError, match=r"d\.csv\.gz:\d+: unreadable"):
        list(read_rows(path))


def test_not_gzip_at_all_is_named(tmp_path):
    path = tmp_path / "d.csv.gz"
    path.write_text("InvoiceNo,StockCode\n")
    with pytest.raises(DataError, match=r"d\.csv\.gz:\d+: unreadable"):
        list(read_rows(path))


def test_dataset_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ORION_DATASET", str(tmp_path / "x.csv.gz"))
    assert default_data_path() == tmp_path / "x.csv.gz"
    monkeypatch.delenv("ORION_DATASET")
    assert default_data_path().parts[-3:] == ("shared", "data", "online_retail.csv.gz")


def test_the_real_dataset_header_parses(monkeypatch):
    monkeypatch.delenv("ORION_DATASET", raising=False)
    path = default_data_path()
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    first = next(read_invoices(path))
    assert first.number == "536365" and first.rows[0].sku == "85123A"
    assert first.at == datetime(2010, 12, 1, 8, 26)
