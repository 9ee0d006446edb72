"""Orion's SQLAlchemy 2 models, engine and session factory, and domain rules."""

from models.catalog import HELD, Inventory, InventoryLedger, Product, Reservation
from models.db import Base, dispose_engine, get_engine, read_only, session_factory, unit_of_work, utcnow
from models.fulfilment import EmailMessage, Shipment
from models.order import InvalidTransition, Order, OrderLine
from models.outbox import OutboxMessage
from models.payment import Payment
from models.purchasing import PurchaseOrder
from models.saga_log import OrderEvent, SagaStep, record_event
from models.token import RevokedToken
from models.user import User

__all__ = [
    "HELD",
    "Base",
    "EmailMessage",
    "InvalidTransition",
    "Inventory",
    "InventoryLedger",
    "Order",
    "OrderEvent",
    "OrderLine",
    "OutboxMessage",
    "Payment",
    "Product",
    "PurchaseOrder",
    "Reservation",
    "RevokedToken",
    "SagaStep",
    "Shipment",
    "User",
    "dispose_engine",
    "get_engine",
    "read_only",
    "record_event",
    "session_factory",
    "unit_of_work",
    "utcnow",
]
