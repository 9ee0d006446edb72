"""The Celery app: ``celery -A worker worker|beat|flower``.

Signals only: engine disposal after fork, session cleanup. Business rules live
in ``models`` and the saga in ``tasks``.
"""

from celery import Celery

from config import get_settings, prepare_data_dir
from worker.signals import connect_signals

prepare_data_dir(get_settings())
app = Celery("orion")
app.config_from_object("celeryconfig")
app.conf.include = [
    "tasks.lifecycle",
    "tasks.stock",
    "tasks.payment",
    "tasks.fulfilment",
    "tasks.outbox",
    "tasks.scheduled",
]
connect_signals()

celery = app
__all__ = ["app", "celery"]
