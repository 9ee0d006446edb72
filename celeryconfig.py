"""Celery settings (lowercase only), drawn from ``config``.

What makes SPEC's guarantees hold on RabbitMQ:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acked only
  after its task finished, so a killed worker child's task is redelivered.
- ``worker_prefetch_multiplier = 1``: a worker holds one unacked message per
  child, so a crash strands as little as possible.
- publisher confirms (``confirm_publish``): ``apply_async`` returns only once
  RabbitMQ has the message.
- classic durable queues: Celery's native delayed delivery (switched on by
  quorum queues) dropped countdown messages on RabbitMQ before 4.0.1
  (celery#9867); this machine runs 3.10, so countdown retries wait in the
  worker (unacked, redelivered on a crash) instead.
"""

from kombu import Exchange, Queue

from config import get_settings
from tasks.saga import task_priorities

_settings = get_settings()

SAGA_QUEUE, FULFILMENT_QUEUE, NOTIFY_QUEUE = "orion.saga", "orion.fulfilment", "orion.notify"
_exchange = Exchange("orion", type="direct", durable=True)

broker_url = _settings.broker_url
broker_transport_options = _settings.broker_transport_options
broker_connection_retry_on_startup = True
broker_pool_limit = 10
result_backend = _settings.result_backend
result_expires = 86400
result_extended = False

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"
timezone = "UTC"
enable_utc = True

# Messages a worker cannot or must not run (undecodable, an unknown task, arguments
# that do not fit, poison) go to the dead-letter queue instead of being dropped
# (worker.dead_letter; ``orion dlq`` inspects and replays them).
worker_consumer = "worker.dead_letter:DeadLetteringConsumer"
# Prefork, but a worker without an event loop (the embedded default) stops to be
# restarted when a pool process dies holding the pool's shared queue lock.
worker_pool = "worker.pool:TaskPool"
# Each worker's remote-control queue is not exclusive (Celery's default since 5.5):
# after a network partition the broker may still hold the worker's old connection
# when the worker reconnects, and the exclusive queue made it exit with
# RESOURCE_LOCKED (bench.faults network-partition --duration 90). The queue is
# still auto-deleted and expires 10 s after its last consumer.
control_queue_exclusive = False

task_acks_late = True
task_reject_on_worker_lost = True
task_acks_on_failure_or_timeout = True
# RabbitMQ: one unacked message per child. The filesystem transport (embedded
# default) deletes a message when it is read, so nothing is acked late there,
# and a child slot is refilled only on the next poll tick (0.1 s): prefetch 1
# capped a 2-child worker near 20 tasks/s.
worker_prefetch_multiplier = 8 if _settings.embedded else 1
worker_cancel_long_running_tasks_on_connection_loss = True
task_ignore_result = True  # results only where a chord needs them (see tasks.canvas)
task_track_started = False
# A task over its soft limit gets SoftTimeLimitExceeded (transient: retried); over
# the hard limit its pool process is killed and the order waits in its step for the
# safety net (tasks.base.SagaTask.on_failure).
task_time_limit = _settings.task_time_limit_s
task_soft_time_limit = _settings.task_soft_time_limit_s or None  # 0: no soft limit
worker_max_tasks_per_child = 2000
worker_hijack_root_logger = False

task_create_missing_queues = False
task_default_queue = SAGA_QUEUE
task_default_exchange = _exchange.name
task_default_routing_key = SAGA_QUEUE
task_default_queue_type = "classic"
worker_detect_quorum_queues = False
# Priority queues (x-max-priority): a later saga stage is sent with a higher
# priority (tasks.saga.STAGE_PRIORITY, by route below), so under a backlog orders already under
# way finish before new ones start, and orders end in about the order they came.
# RabbitMQ orders by priority only what waits in the queue, which prefetch 1
# keeps to nearly everything. Queues declared before priorities existed must be
# re-declared: worker.queues.ensure_queues does it at start-up when they are empty.
MAX_PRIORITY = 9
task_queues = [
    Queue(name, _exchange, routing_key=name, durable=True, max_priority=MAX_PRIORITY)
    for name in (SAGA_QUEUE, FULFILMENT_QUEUE, NOTIFY_QUEUE)
]
# No task_default_priority: it becomes every task's own ``priority`` option,
# which outranks the route's (a route fills only options left None).
_queues = {
    "saga.create_shipment": FULFILMENT_QUEUE,
    "saga.cancel_shipment": FULFILMENT_QUEUE,
    "saga.send_confirmation_email": NOTIFY_QUEUE,
    "saga.send_cancellation_email": NOTIFY_QUEUE,
}

# Task events feed Flower. kombu's filesystem transport lists and sorts its
# whole folder for every message it reads, so in the embedded default the
# event files (several per task) made each read slower until orders stalled
# (2 of 296 finished in 10 minutes); there, Flower sees workers and running
# tasks through remote control only.
worker_send_task_events = not _settings.embedded
# A "task-sent" event is one more message per task, published by whoever sends
# the task; Flower shows a task from "received" on without it.
task_send_sent_event = False


def _every(seconds: float) -> dict:
    """A beat entry's timing: due every ``seconds``; a copy not run by the next is dropped."""
    return {"schedule": seconds, "options": {"expires": max(seconds, 1.0)}}


# Keyed by task name; each job is safe to run twice in a period (docs/operations.md).
beat_schedule = {
    task: {"task": task, **_every(seconds)}
    for task, seconds in (
        ("outbox.republish_unsent", _settings.outbox_sweep_s),
        ("scheduled.restock_low_inventory", _settings.restock_every_s),
        ("scheduled.send_payment_reminders", _settings.payment_sweep_every_s),
        ("scheduled.expire_unpaid_orders", _settings.payment_sweep_every_s),
        ("scheduled.release_lapsed_holds", _settings.saga_redrive_every_s),
        ("scheduled.audit_inventory", _settings.audit_every_s),
        ("scheduled.redrive_stalled_sagas", _settings.saga_redrive_every_s),
    )
}
beat_schedule_filename = str(_settings.data_dir / "celerybeat-schedule")

# Each saga task's queue and message priority (tasks.saga.task_priorities). A
# route names its queue even when it is the default: Celery's chord_unlock (the
# embedded default's file:// backend) reads the queue from the route. Beat jobs
# go at the top priority: sent with an expiry of one period, they expired unrun
# behind a backlog of sagas at priority 0, the safety nets first of all.
task_routes = {
    **{
        name: {
            "priority": priority,
            "queue": _queues.get(name, SAGA_QUEUE),
            "routing_key": _queues.get(name, SAGA_QUEUE),
        }
        for name, priority in task_priorities().items()
    },
    **{
        name: {"priority": MAX_PRIORITY, "queue": SAGA_QUEUE, "routing_key": SAGA_QUEUE}
        for name in beat_schedule
    },
}
