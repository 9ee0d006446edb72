"""The progress relay: order and stock events, from the transaction that made
them to the Socket.IO clients that watch them.

- Domain code queues a notification in the session (``queue_notification``)
  beside the change it reports; nothing leaves the process yet.
- ``hooks.install()`` emits a session's notifications once its transaction has
  committed, and drops them on rollback, so a client that re-reads the order
  after an event never finds it behind the event.
- ``emitter.Relay`` emits through Flask-SocketIO's message queue as a write-only
  client manager (Redis in services mode, kombu's filesystem transport in the
  embedded default); the web process's Socket.IO server listens on the same
  queue and delivers to the rooms (see ``web/realtime.py``).

The order event log (``order_events``) stays the source of truth: a client that
missed events (disconnected, or the relay was down) replays them with
``subscribe {order_id, after_seq}``.
"""

from progress.notifications import Notification, queue_notification, take_notifications
from progress.rooms import OPERATORS, order_room, user_room

__all__ = [
    "OPERATORS",
    "Notification",
    "order_room",
    "queue_notification",
    "take_notifications",
    "user_room",
]
