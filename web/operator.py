"""What the operator dashboard needs at a glance: orders by status, sagas stuck
in a step, SKUs below their reorder point, and where Flower is; and the data
behind its charts (``observability.charts``, ``observability.queues``)."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint
from marshmallow import Schema, fields
from sqlalchemy import func, select

from config import get_settings
from models import Inventory, Order, SagaStep, read_only, utcnow
from models import order as lifecycle
from models.user import OPERATOR
from observability import charts
from observability.queues import queue_depths
from web.apidoc import authenticate, response

bp = Blueprint("operator", __name__)
STUCK_LIMIT = 50


class StuckOrderSchema(Schema):
    id = fields.UUID()
    status = fields.String()
    step = fields.String(allow_none=True, metadata={"description": "The last step it logged"})
    step_status = fields.String(allow_none=True)
    since = fields.DateTime(metadata={"description": "When the order last changed"})
    age_s = fields.Integer(metadata={"description": "Seconds since then"})


class LowStockSchema(Schema):
    sku = fields.String()
    available = fields.Integer()
    reorder_point = fields.Integer()


class OverviewSchema(Schema):
    counts = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={"description": "Orders by status (every status, zero included)"},
    )
    stuck_after_s = fields.Integer()
    stuck = fields.List(
        fields.Nested(StuckOrderSchema),
        metadata={
            "description": "In-flight orders unchanged for stuck_after_s, oldest first"
            f" (at most {STUCK_LIMIT})"
        },
    )
    low_stock = fields.List(
        fields.Nested(LowStockSchema),
        metadata={
            "description": f"SKUs whose available stock is below the reorder point (at most {STUCK_LIMIT})"
        },
    )
    flower_url = fields.String()


CHART_MINUTES = 60


class OutcomesSchema(Schema):
    completed = fields.List(fields.Integer())
    cancelled = fields.List(fields.Integer())
    failed = fields.List(fields.Integer())


class StepDurationSchema(Schema):
    step = fields.String(metadata={"description": "Forward step name, warehouses merged"})
    runs = fields.Integer(metadata={"description": "Successful runs in the window"})
    p50_ms = fields.Float()
    p95_ms = fields.Float()
    p99_ms = fields.Float()


class QueueDepthSchema(Schema):
    messages = fields.Integer(metadata={"description": "Messages ready for delivery"})
    consumers = fields.Integer()


class ChartsSchema(Schema):
    since = fields.DateTime(metadata={"description": "Start of the first minute (UTC)"})
    minutes = fields.List(
        fields.String(),
        metadata={
            "description": f"The {CHART_MINUTES} minutes of the window, oldest first, "
            "as YYYY-MM-DDTHH:MM (UTC); "
            "the series below have one value per minute"
        },
    )
    outcomes = fields.Nested(
        OutcomesSchema,
        metadata={"description": "Orders that reached each final status, per minute of finished_at"},
    )
    retries = fields.List(
        fields.Integer(), metadata={"description": "Step retries (attempt - 1) per minute the step started"}
    )
    step_durations = fields.List(
        fields.Nested(StepDurationSchema),
        metadata={
            "description": "Forward steps that succeeded in the window: duration percentiles "
            "(first attempt to success, nearest rank)"
        },
    )
    queues = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(QueueDepthSchema),
        allow_none=True,
        metadata={"description": "Broker queue depths now; null when the broker does not answer"},
    )
    sampled_at = fields.DateTime()


@bp.get("/operator/charts")
@authenticate(role=OPERATOR)
@response(ChartsSchema())
def operator_charts():
    """Orders by outcome, step retries per minute and step duration percentiles over the
    last hour, and the queue depths now, for the operator dashboard's charts."""
    now = utcnow()
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=CHART_MINUTES - 1)
    keys = charts.minutes(since, CHART_MINUTES)
    with read_only() as session:
        outcomes = charts.outcomes_per_minute(session, since)
        retries = charts.retries_per_minute(session, since)
        durations = charts.step_durations(session, since)
    return {
        "since": since,
        "minutes": keys,
        "sampled_at": now,
        "outcomes": {status: [outcomes.get((key, status), 0) for key in keys] for status in charts.OUTCOMES},
        "retries": [retries.get(key, 0) for key in keys],
        "step_durations": durations,
        "queues": queue_depths(),
    }


@bp.get("/operator/overview")
@authenticate(role=OPERATOR)
@response(OverviewSchema())
def overview():
    """Orders by status, stuck sagas and low stock, for the operator dashboard."""
    settings = get_settings()
    with read_only() as session:
        return {
            "counts": _counts(session),
            "stuck_after_s": settings.stuck_after_s,
            "stuck": _stuck(session, settings.stuck_after_s),
            "low_stock": _low_stock(session),
            "flower_url": settings.flower_url,
        }


def _counts(session) -> dict[str, int]:
    rows = session.execute(select(Order.status, func.count()).group_by(Order.status))
    return {status: 0 for status in lifecycle.STATUSES} | dict(rows.all())


def _stuck(session, after_s: int) -> list[dict]:
    now = utcnow()
    orders = session.scalars(
        select(Order).where(lifecycle.stuck(now, after_s)).order_by(Order.updated_at).limit(STUCK_LIMIT)
    ).all()
    return [_stuck_row(session, order, now) for order in orders]


def _stuck_row(session, order: Order, now) -> dict:
    step = session.scalar(
        select(SagaStep).where(SagaStep.order_id == order.id).order_by(SagaStep.id.desc()).limit(1)
    )
    return {
        "id": order.id,
        "status": order.status,
        "step": step.name if step else None,
        "step_status": step.status if step else None,
        "since": order.updated_at,
        "age_s": int((now - order.updated_at).total_seconds()),
    }


def _low_stock(session) -> list[dict]:
    available = Inventory.on_hand - Inventory.reserved
    rows = session.execute(
        select(Inventory.sku, available.label("available"), Inventory.reorder_point)
        .where(available < Inventory.reorder_point)
        .order_by(available - Inventory.reorder_point, Inventory.sku)
        .limit(STUCK_LIMIT)
    )
    return [row._asdict() for row in rows]
