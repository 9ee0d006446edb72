"""Shipments and the email outbox (one email per order and template)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, utcnow

SHIPMENT_CREATED, SHIPMENT_CANCELLED = "created", "cancelled"
EMAIL_PENDING, EMAIL_SENDING, EMAIL_SENT = "pending", "sending", "sent"
# The SMTP server refused it for good (a 5yz reply): never sent again.
EMAIL_REFUSED = "refused"
# Over EMAIL_MAX_PER_ADDRESS_PER_HOUR for its address when it was due: never sent
# (security issue item 9: a customer's orders cannot flood an address they typed).
EMAIL_SUPPRESSED = "suppressed"


class Shipment(Base):
    """One parcel per (order, warehouse)."""

    __tablename__ = "shipments"
    __table_args__ = (UniqueConstraint("order_id", "warehouse", name="uq_shipments_order_warehouse"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id"))
    warehouse: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=SHIPMENT_CREATED)
    carrier: Mapped[str] = mapped_column(String(32), default="orion-post")
    tracking_number: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[datetime | None]


class EmailMessage(Base):
    """An email owed to a customer; unique per (order, template), so never sent twice."""

    __tablename__ = "email_outbox"
    __table_args__ = (
        UniqueConstraint("order_id", "template", name="uq_email_outbox_template"),
        # The email step counts an address's emails of the last hour (migration 0007).
        Index("ix_email_outbox_to_address_created", "to_address", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id"))
    template: Mapped[str] = mapped_column(String(64))
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=EMAIL_PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
