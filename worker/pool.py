"""The prefork pool for workers without an event loop (the embedded default).

kombu's filesystem transport has no event loop, so Celery runs the worker's
synchronous loop with billiard's plain ``Pool``: every pool process reads its
next job from one shared pipe under one shared lock (``SimpleQueue.get_payload``
holds ``_rlock`` while it waits in ``recv_bytes``). A process killed by a signal
while it waits there never releases the lock: the processes Celery starts in its
place wait on the lock for ever, and so does the main process, for a free slot.
The worker stays alive and does nothing (seen with ``python -m bench.faults
--mode embedded --faults kill-children``: 122 of 145 orders stuck).

:class:`TaskPool` uses :class:`BlockingPool`, which notices such a death and
stops the whole worker (exit status 70, ``EX_SOFTWARE``) after killing its other
pool processes, so that its supervisor (``tools.launch``) starts a fresh one.
What the stopped worker had read ahead is re-driven by the safety net, as after
any worker crash in the embedded default (README, "What the embedded default
does not promise"). A process that dies while it runs a job (a hard time limit,
a crash inside a task) had already left the lock, and the pool simply replaces
it. Workers with an event loop (services mode, RabbitMQ) use Celery's
``AsynPool``, which gives each process pipes of its own, and are unaffected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from typing import Any

from billiard.pool import RUN
from billiard.pool import Pool as _BilliardPool
from celery.concurrency import prefork
from celery.worker import state as worker_state

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 1.0
EX_SOFTWARE = 70  # sysexits.h: internal software error; the supervisor restarts the worker


class BlockingPool(_BilliardPool):  # type: ignore[misc]  # billiard has no type hints
    """billiard's ``Pool`` that stops the worker when a pool process is killed
    by a signal while it held no job (so it may have held the shared queue's
    read lock), with :func:`stop_worker`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._celery_on_process_down = kwargs.pop("on_process_down", None)
        super().__init__(*args, on_process_down=self._on_process_down, **kwargs)

    def _on_process_down(self, process: Any) -> None:
        if self._celery_on_process_down is not None:
            self._celery_on_process_down(process)
        exitcode = process.exitcode
        if self._state != RUN:
            return  # the pool is being closed or terminated (a shutdown)
        if exitcode is None or exitcode >= 0 or getattr(process, "_controlled_termination", False):
            return  # a normal exit, a recycled process, or one the pool itself stopped
        if self._worker_active(process):
            return  # it was running a job: it had left the queue's lock
        time.sleep(SHUTDOWN_GRACE_S)  # a stop signal to the whole group reaches the main process too
        stopping = (worker_state.should_stop, worker_state.should_terminate)
        if self._state != RUN or stopping != (None, None):
            return
        log.critical(
            "pool process %s was killed by signal %d while waiting for work; it may have held "
            "the pool's shared queue lock, so this worker stops to be restarted (worker.pool)",
            process.pid,
            -exitcode,
        )
        stop_worker([p.pid for p in self._pool if p.pid and p.pid != process.pid])


def stop_worker(pids: list[int]) -> None:
    """Kill the pool processes ``pids`` (SIGKILL) and end this process at once
    with status :data:`EX_SOFTWARE`: a warm or cold shutdown would wait on the
    same lock."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    logging.shutdown()
    os._exit(EX_SOFTWARE)


class TaskPool(prefork.TaskPool):
    """Celery's prefork pool, with :class:`BlockingPool` for the synchronous loop
    (``worker_pool = "worker.pool:TaskPool"``)."""

    BlockingPool = BlockingPool
