"""The order saga, declared in one place: forward steps in order, each with its undo.

    validate_order
    reserve_stock (one per warehouse, in parallel) -> collect_reservations   undo: release_stock
    authorize_payment                                                       undo: void_authorization
    capture_payment (the pivot)                                             undo: refund_payment
    send_confirmation_email | create_shipment (one per warehouse)
                                                   -> complete_order        undo: cancel_shipment

The payment steps are declared ``inline``: each runs in the worker process of
the step before it, right after that step commits, instead of as a message
of its own (``SagaTask`` falls back to a message wherever that would change
an outcome). An order is then 2 x warehouses + 4 messages.

Compensation runs the undos of every step that ran, in reverse, then
``finish_compensation`` (the order ends ``cancelled`` or ``failed``) and the
cancellation email.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from celery import Celery, chain, chord
from celery.canvas import Signature


@dataclass(frozen=True)
class Step:
    """A forward task and the task that undoes it (None when nothing can be undone).

    ``external``: the step calls a provider, so its effect can exist there
    without the row that records it (the worker died in between).
    ``per_warehouse``: one task per fulfilment centre the order's lines ship
    from (``models.catalog.WAREHOUSES``), each taking the warehouse as an argument.
    """

    task: str
    undo: str | None = None
    external: bool = False
    per_warehouse: bool = False

    @property
    def short_name(self) -> str:
        return self.task.split(".", 1)[1]


@dataclass(frozen=True)
class Stage:
    """Steps run together, each when the order is in status ``runs_in``.

    Several steps, or a ``per_warehouse`` step, make a chord whose ``join``
    task receives the header results and runs in ``join_runs_in``.

    ``inline``: the stage's one step runs in the worker process of the task
    before it (the previous stage's step or join) as soon as that one commits,
    with a transaction, a step-log row and a retry budget of its own, but no
    message: a message, its delivery, acknowledgement and task events cost
    more CPU than a payment step's own work (docs/performance.md). It is
    still a task of its own name in the canvas, sent as a message whenever
    it cannot run inline (``SagaTask.run_inline_successors``).
    """

    steps: tuple[Step, ...]
    runs_in: str
    join: str | None = None
    join_runs_in: str | None = None
    inline: bool = False

    def __post_init__(self) -> None:
        if self.inline and (self.join or len(self.steps) != 1 or self.steps[0].per_warehouse):
            raise ValueError("only a stage of one step, not a chord, can run inline")


ORDER_SAGA: tuple[Stage, ...] = (
    Stage((Step("saga.validate_order"),), runs_in="pending"),
    Stage(
        (Step("saga.reserve_stock", undo="saga.release_stock", per_warehouse=True),),
        runs_in="pending",
        join="saga.collect_reservations",
        join_runs_in="pending",
    ),
    Stage(
        (Step("saga.authorize_payment", undo="saga.void_authorization", external=True),),
        runs_in="stock_reserved",
        inline=True,
    ),
    Stage(
        (Step("saga.capture_payment", undo="saga.refund_payment", external=True),),  # the pivot
        runs_in="payment_authorized",
        inline=True,
    ),
    Stage(
        (
            Step("saga.send_confirmation_email"),
            Step("saga.create_shipment", undo="saga.cancel_shipment", per_warehouse=True),
        ),
        runs_in="confirmed",
        join="saga.complete_order",
        join_runs_in="shipped",
    ),
)
COMPENSATION_EPILOGUE = ("saga.finish_compensation", "saga.send_cancellation_email")

# Message priority by stage (celeryconfig.MAX_PRIORITY): later stages first, so
# a backlog of new orders does not hold back the ones already under way.
# Compensation releases held stock and money, so it goes before any forward step.
STAGE_PRIORITY = {i: 2 + i for i in range(len(ORDER_SAGA))}
COMPENSATION_PRIORITY = 2 + len(ORDER_SAGA) + 1


def task_priorities() -> dict[str, int]:
    """The message priority of every saga task by name, for ``celeryconfig.task_routes``.

    Given by route rather than on each signature: Celery passes ``priority=None``
    to the next link of a chain and into a chord's body options, which replaced
    a signature's own priority (the joins went out at 0, behind every new order);
    a route's value stands where the option is None (``celery.app.routes``).
    """
    priorities = {}
    for i, stage in enumerate(ORDER_SAGA):
        for step in stage.steps:
            priorities[step.task] = STAGE_PRIORITY[i]
            if step.undo:
                priorities[step.undo] = COMPENSATION_PRIORITY
        if stage.join:
            priorities[stage.join] = STAGE_PRIORITY[i]
    for name in ("saga.compensate", *COMPENSATION_EPILOGUE):
        priorities[name] = COMPENSATION_PRIORITY
    return priorities


# The order status each forward task runs in (SagaTask.runs_in).
RUNS_IN: dict[str, str] = {
    **{step.task: stage.runs_in for stage in ORDER_SAGA for step in stage.steps},
    **{
        stage.join: stage.join_runs_in
        for stage in ORDER_SAGA
        if stage.join is not None and stage.join_runs_in is not None
    },
}

# The forward tasks that run in the process of the task before them (Stage.inline).
INLINE: frozenset[str] = frozenset(step.task for stage in ORDER_SAGA if stage.inline for step in stage.steps)


def forward_canvas(
    app: Celery, order_id: str, run: int, warehouses: Sequence[str], from_task: str | None = None
) -> Signature:
    """The forward saga for one order as a Celery canvas, optionally from ``from_task`` on.

    ``warehouses``: the distinct warehouses of the order's lines; a
    ``per_warehouse`` step becomes one chord header task per warehouse, so an
    order is at most 2 x len(WAREHOUSES) + 6 tasks, whatever its line count
    (of which the ``inline`` ones are usually not messages).
    """
    start = 0
    if from_task is not None:
        start = next(i for i, s in enumerate(ORDER_SAGA) if any(st.task == from_task for st in s.steps))
    return chain(
        *(
            _stage_signature(app, ORDER_SAGA[i], order_id, run, sorted(set(warehouses)))
            for i in range(start, len(ORDER_SAGA))
        )
    )


def _stage_signature(
    app: Celery, stage: Stage, order_id: str, run: int, warehouses: Sequence[str]
) -> Signature:
    if stage.join is None:
        return _task(app, stage.steps[0].task, order_id, run)
    # Header results reach the join through the backend's chord support; only
    # backends without native join (file://, db+) must store them for polling.
    keep = not app.backend.supports_native_join
    header = [
        app.signature(step.task, args=(order_id, run, *extra), immutable=True, ignore_result=not keep)
        for step in stage.steps
        for extra in ([(w,) for w in warehouses] if step.per_warehouse else [()])
    ]
    return chord(header, app.signature(stage.join, args=(order_id, run), ignore_result=True))


def compensation_canvas(app: Celery, order_id: str, steps_that_ran: set[str]) -> Signature:
    """Undo every step in ``steps_that_ran`` (short names), latest first, then finish.

    An external step right after the last one that ran is undone too: its
    provider call may have succeeded in a worker that died before recording it
    (the undo asks the provider, and does nothing if there is nothing to undo).
    """
    ran = [
        i for i, stage in enumerate(ORDER_SAGA) if any(s.short_name in steps_that_ran for s in stage.steps)
    ]
    after = max(ran, default=-1) + 1
    undos = [
        step.undo
        for i, stage in reversed(list(enumerate(ORDER_SAGA)))
        for step in reversed(stage.steps)
        if step.undo and (step.short_name in steps_that_ran or (i == after and step.external))
    ]
    names = undos + list(COMPENSATION_EPILOGUE)
    return chain(*(_task(app, name, order_id) for name in names))


def _task(app: Celery, name: str, *args: object) -> Signature:
    # Signatures made by name are sent with send_task, which keeps results
    # unless told not to, and with the Redis backend every kept result
    # subscribes the producer to a channel nobody reads (connections were
    # reset after ~6,000 orders). Only chord headers may keep theirs.
    return app.signature(name, args=args, immutable=True, ignore_result=True)
