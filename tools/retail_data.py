"""Read the Online Retail dataset (UCI 352) as typed rows and invoices.

The file is gzip-compressed (or plain, for names not ending in ``.gz``) UTF-8
CSV per RFC 4180 with the header ``HEADER``; rows are in chronological order.
Every reading error is a ``DataError`` whose message names the file and, where
known, the line: ``online_retail.csv.gz:1234: Quantity: 'x' is not an integer``.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

HEADER = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_LINES, MAX_QUANTITY = 100, 1000  # SPEC: an order has 1-100 lines of 1-1,000 units

# A product code is five digits with an optional one- or two-letter variant
# suffix (85123A, 15056BL; a lower-case suffix is the same product: see ``sku``).
PRODUCT_CODE = re.compile(r"\d{5}[A-Za-z]{0,2}")
# Reviewed by hand: codes outside the pattern that are real, priced goods sold
# through the dotcom shop. The other DCGS codes occur only in zero-price stock
# write-offs ("ebay", empty description) and are not products.
REVIEWED_PRODUCTS = frozenset(
    {"DCGSSBOY", "DCGSSGIRL", "DCGS0003", "DCGS0004", "DCGS0069", "DCGS0070", "DCGS0076"}
)
# An invoice number seen again within this many other invoices continues the
# earlier one (542806 is interrupted by C542805 in the source).
REJOIN_WINDOW = 8


class DataError(ValueError):
    """The dataset is missing, corrupt or malformed; the message names file and line."""


def default_data_path() -> Path:
    """``$ORION_DATASET``, else ``<repo>/../shared/data/online_retail.csv.gz``."""
    env = os.environ.get("ORION_DATASET")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "online_retail.csv.gz"


@lru_cache(maxsize=65536)
def is_product_code(code: str) -> bool:
    """True for a sellable product's StockCode; False for postage, fees, vouchers, etc."""
    return PRODUCT_CODE.fullmatch(code) is not None or code in REVIEWED_PRODUCTS


@dataclass(frozen=True, slots=True)
class Row:
    """One invoice line. ``at`` is naive UK local time; ``line`` the file's line number;
    ``sku`` the catalog key: the code upper-cased (``85123a`` and ``85123A`` are one product)."""

    invoice_no: str
    code: str
    description: str
    quantity: int
    at: datetime
    unit_price: Decimal
    customer_id: str | None
    country: str
    line: int
    sku: str


@dataclass(frozen=True, slots=True)
class Invoice:
    """Rows sharing an InvoiceNo, in file order; ``part`` > 1 only for a late reappearance."""

    number: str
    rows: tuple[Row, ...]
    part: int = 1

    @property
    def at(self) -> datetime:
        return self.rows[0].at

    @property
    def customer_id(self) -> str | None:
        return self.rows[0].customer_id

    @property
    def country(self) -> str:
        return self.rows[0].country

    @property
    def is_cancellation(self) -> bool:
        return self.number.startswith("C")

    @property
    def is_sale(self) -> bool:
        """A plain 6-digit invoice (not ``C`` cancellation nor ``A`` bad-debt adjustment)."""
        return self.number.isdigit()


def _open_text(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_rows(path: Path | str) -> Iterator[Row]:
    """Stream typed rows from ``path``. Raises DataError (missing, corrupt, bad header or field)."""
    path = Path(path)
    with _open_text(path) as handle:
        reader = csv.reader(handle, strict=True)
        try:
            _check_header(path, next(reader, None))
            for fields in reader:
                yield _parse(path, reader.line_num, fields)
        except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}:{reader.line_num}: unreadable ({exc})") from exc


def _check_header(path: Path, header: list[str] | None) -> None:
    if header is None:
        raise DataError(f"{path}:1: empty file, expected header {','.join(HEADER)}")
    if tuple(h.strip().lstrip("\ufeff") for h in header) != HEADER:
        raise DataError(f"{path}:1: bad header {','.join(header)!r}, expected {','.join(HEADER)}")


def _parse(path: Path, line: int, f: list[str]) -> Row:
    if len(f) != len(HEADER):
        raise DataError(f"{path}:{line}: {len(f)} fields, expected {len(HEADER)}")
    try:
        field = "Quantity"
        quantity = int(f[3])
        field = "InvoiceDate"
        at = datetime.fromisoformat(f[4])
        field = "UnitPrice"
        price = Decimal(f[5])
    except (ValueError, InvalidOperation):
        raise DataError(f"{path}:{line}: {field}: bad value {f[HEADER.index(field)]!r}") from None
    if not f[0] or not f[1]:
        raise DataError(f"{path}:{line}: {'InvoiceNo' if not f[0] else 'StockCode'}: empty")
    code = f[1].strip()
    return Row(f[0], code, f[2], quantity, at, price, f[6] or None, f[7], line, code.upper())


def group_invoices(rows: Iterable[Row]) -> Iterator[Invoice]:
    """Group consecutive rows by InvoiceNo, in the order each invoice first appears.

    A number that reappears within ``REJOIN_WINDOW`` invoices is joined to its
    first run; a later reappearance becomes a separate ``Invoice`` with ``part`` 2, 3...
    """
    pending: OrderedDict[str, list[Row]] = OrderedDict()
    parts: dict[str, int] = {}
    for row in rows:
        pending.setdefault(row.invoice_no, []).append(row)
        if len(pending) > REJOIN_WINDOW:
            yield _emit(*pending.popitem(last=False), parts)
    while pending:
        yield _emit(*pending.popitem(last=False), parts)


def _emit(number: str, rows: list[Row], parts: dict[str, int]) -> Invoice:
    parts[number] = parts.get(number, 0) + 1
    return Invoice(number, tuple(rows), parts[number])


def read_invoices(path: Path | str) -> Iterator[Invoice]:
    """``group_invoices(read_rows(path))``."""
    return group_invoices(read_rows(path))


@dataclass
class SaleLines:
    """What a sale invoice orders: ``lines`` [(sku, quantity)] in file order, unmerged,
    and how many rows were skipped or adjusted to fit the API's limits."""

    lines: list[tuple[str, int]]
    non_product: int = 0  # rows with a non-product code (postage, fees...)
    not_priced: int = 0  # rows with UnitPrice <= 0
    negative_quantity: int = 0
    clamped: int = 0  # quantities moved into 1..MAX_QUANTITY
    dropped: int = 0  # lines past the first MAX_LINES


def sale_lines(invoice: Invoice) -> SaleLines:
    """The order lines a sale invoice yields (empty for cancellations and adjustments)."""
    out = SaleLines([])
    if not invoice.is_sale:
        return out
    for row in invoice.rows:
        if not is_product_code(row.code):
            out.non_product += 1
        elif row.unit_price <= 0:
            out.not_priced += 1
        elif row.quantity < 0:
            out.negative_quantity += 1
        else:
            quantity = min(max(row.quantity, 1), MAX_QUANTITY)
            out.clamped += quantity != row.quantity
            out.lines.append((row.sku, quantity))
    out.dropped = max(0, len(out.lines) - MAX_LINES)
    del out.lines[MAX_LINES:]
    return out
