"""Beat jobs (``scheduled.<verb_object>``), each safe to run twice in a period."""
from __future__ import annotations

import logging

from celery import shared_task

from config import get_settings
from services.safety_net import redrive_stalled_sagas

log = logging.getLogger(__name__)


@shared_task(name="scheduled.redrive_stalled_sagas", ignore_result=True)
def redrive_stalled(after_s: float | None = None) -> int:
    """Re-drive sagas unchanged for ``SAGA_REDRIVE_AFTER_SECONDS``; how many it re-drove."""
    ids = redrive_stalled_sagas(get_settings().saga_redrive_after_s if after_s is None else after_s)
    if ids:
        log.warning("safety net: re-drove %d stalled saga(s): %s", len(ids), ", ".join(ids))
    return len(ids)
