"""The catalog: products with their available stock, public (no token needed)."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import Select, func, or_, select

from models import Inventory, Product, read_only
from services.errors import NotFound
from web.apidoc import arguments, other_responses, response
from web.pagination import encode_cursor, page
from web.schemas import ProductPageSchema, ProductQuerySchema, ProductSchema

bp = Blueprint("products", __name__)


@bp.get("/products")
@arguments(ProductQuerySchema())
@response(ProductPageSchema())
def list_products(args: dict):
    """List products ordered by sku; q matches sku or name, case-insensitively."""
    with read_only() as session:
        rows = [row._asdict() for row in session.execute(_products_query(args))]
    return page(rows, args["limit"], lambda product: encode_cursor(product["sku"]))


@bp.get("/products/<sku>")
@response(ProductSchema())
@other_responses({404: "No such product"})
def get_product(sku: str):
    """Show one product with its available stock."""
    with read_only() as session:
        row = session.execute(_catalog().where(Product.sku == sku)).one_or_none()
    if row is None:
        raise NotFound(f"no product with sku {sku!r}")
    return row._asdict()


def _catalog() -> Select:
    """Products with ``available`` (on_hand - reserved; 0 when there is no stock row)."""
    available = func.coalesce(Inventory.on_hand - Inventory.reserved, 0).label("available")
    return select(Product.sku, Product.name, Product.unit_price, Product.currency, available).outerjoin(
        Inventory, Inventory.sku == Product.sku
    )


def _products_query(args: dict) -> Select:
    """``args``: ``{limit, q?, cursor?: last sku seen}``; fetches one row more than ``limit``."""
    query = _catalog().order_by(Product.sku).limit(args["limit"] + 1)
    if "q" in args:
        pattern = "%" + args["q"].replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
        query = query.where(
            or_(Product.sku.ilike(pattern, escape="\\"), Product.name.ilike(pattern, escape="\\"))
        )
    if "cursor" in args:
        query = query.where(Product.sku > args["cursor"])
    return query
