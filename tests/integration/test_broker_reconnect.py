"""A worker that reconnects to RabbitMQ while the broker still holds its old connection.

After a network partition, RabbitMQ notices that a client's connection is dead
only when heartbeats stop arriving; a worker whose side noticed first reconnects
while the old connection, and what it declared, still exist at the broker. Found
by ``python -m bench.faults --faults network-partition --duration 90``: the
worker exited with ``RESOURCE_LOCKED - cannot obtain exclusive access to locked
queue '<worker>.celery.pidbox'`` (Celery declares each worker's remote-control
queue exclusive by default), and the orders waited for a supervisor to restart it.
"""

from __future__ import annotations

import socket
import uuid

from kombu import Consumer

from tests.support.processes import celery_worker
from worker import app


def test_a_worker_starts_while_an_older_connection_still_holds_its_control_queue():
    name = f"test-{uuid.uuid4().hex[:6]}"
    node = f"{name}@{socket.gethostname()}"
    with app.connection_for_write() as lingering:  # the old connection, as the broker still sees it
        channel = lingering.channel()
        queue = app.control.mailbox.get_queue(node)  # declared as the worker's own Node declares it
        with (
            Consumer(channel, [queue], callbacks=[lambda body, message: None]),
            celery_worker(name=name) as worker,
        ):
            assert worker.poll() is None
            assert b"RESOURCE_LOCKED" not in worker.log_path.read_bytes()
