"""Messages a worker cannot run go to the dead-letter queue, not to the floor, and
the worker goes on (issue 9, "Bad input"); ``orion dlq`` lists, replays and purges
them. Real RabbitMQ and a real worker; the messages are published raw, as a
stray or broken producer would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from kombu import Exchange

from tests.support.factories import customer, eventually, place, product, wait_for
from tests.support.processes import REPO
from worker import app as celery_app

SAGA = Exchange("orion", type="direct", durable=True)


def publish_raw(
    body: bytes,
    task: str | None,
    content_type: str = "application/json",
    task_id: str | None = None,
    routing_key: str = "orion.saga",
    argsrepr: str = "",
) -> str:
    """A protocol-2 task message (``task`` None: no task header at all), as bytes."""
    task_id = task_id or str(uuid.uuid4())
    headers = {
        "lang": "py",
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "timelimit": [None, None],
        "eta": None,
        "expires": None,
        "argsrepr": argsrepr,
        "kwargsrepr": "{}",
        "ignore_result": True,
    }
    if task is not None:
        headers["task"] = task
    with celery_app.connection_for_write() as conn:
        conn.Producer().publish(
            body,
            exchange=SAGA,
            routing_key=routing_key,
            headers=headers,
            content_type=content_type,
            content_encoding="utf-8",
            serializer=None,
            delivery_mode=2,
        )
    return task_id


def dlq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools", "dlq", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def listed() -> list[dict]:
    done = dlq("list", "--limit", "10000", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def dead_letters() -> dict[str, dict]:
    return {row["id"]: row for row in listed() if row["id"]}


def args_body(*args, **kwargs) -> bytes:
    return json.dumps(
        [list(args), kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    ).encode()


def test_undecodable_unknown_and_misshapen_messages_are_dead_lettered_and_the_worker_goes_on(worker, uid):
    order_uuid = str(uuid.uuid4())
    sent = {
        "decode": publish_raw(b"{not json", "saga.validate_order"),
        "invalid": publish_raw(
            b"\x80\x04K\x01.", "saga.validate_order", content_type="application/x-python-serialize"
        ),
        "unknown_task": publish_raw(args_body(order_uuid, 1), "saga.no_such_step"),
        "too_many": publish_raw(args_body(order_uuid, 1, "x", "y", "z"), "saga.validate_order"),
        "not_an_order": publish_raw(args_body("DROP TABLE orders", 1), "saga.validate_order"),
        "not_a_body": publish_raw(json.dumps({"order": order_uuid}).encode(), "saga.validate_order"),
    }
    found = eventually(
        lambda: (lambda rows: rows if set(sent.values()) <= rows.keys() else None)(dead_letters()), timeout=30
    )
    reasons = {name: found[task_id]["reason"] for name, task_id in sent.items()}
    assert reasons == {
        "decode": "decode",
        "invalid": "invalid",
        "unknown_task": "unknown_task",
        "too_many": "arguments",
        "not_an_order": "arguments",
        "not_a_body": "arguments",
    }
    assert "no task named 'saga.no_such_step'" in found[sent["unknown_task"]]["detail"]
    assert "arguments do not fit saga.validate_order" in found[sent["too_many"]]["detail"]
    assert "order_id is not an order id" in found[sent["not_an_order"]]["detail"]
    assert all(found[t]["routing_key"] == "orion.saga" for t in sent.values())
    # Nothing of them is left on the queue, and the worker still runs orders.
    with celery_app.connection_for_write() as conn:
        assert conn.default_channel.queue_declare("orion.saga", passive=True).message_count == 0
    assert worker.poll() is None
    order_id = place(customer(uid), [(product(uid, on_hand=5), 1)])
    assert wait_for(order_id).status == "completed"

    purged = dlq("purge", *sent.values())
    assert purged.returncode == 0, purged.stderr
    assert f"{len(sent)} message(s) purged" in purged.stdout
    assert not set(sent.values()) & dead_letters().keys()


def test_replay_sends_a_message_back_to_its_queue_and_names_ids_it_cannot_find(worker):
    """A message whose arguments do not fit comes back from a replay and is dead-lettered
    again, once: replay put the original on orion.saga, and the worker read it."""
    task_id = publish_raw(args_body(1, 2), "scheduled.audit_inventory", argsrepr="(1, 2)")  # takes none
    first = eventually(lambda: dead_letters().get(task_id), timeout=30)
    assert first["reason"] == "arguments" and first["task"] == "scheduled.audit_inventory"

    replayed = dlq("replay", task_id, "00000000-0000-0000-0000-000000000000")
    assert replayed.returncode == 1
    assert f"replayed {task_id} scheduled.audit_inventory -> orion.saga" in replayed.stdout
    assert "00000000-0000-0000-0000-000000000000: not in the dead-letter queue" in replayed.stderr

    # The worker read it again and dead-lettered it again: one copy, not two.
    eventually(lambda: worker.log_path.read_text().count(f"id {task_id} from orion.saga") == 2, timeout=30)
    copies = eventually(lambda: [row for row in listed() if row["id"] == task_id], timeout=10)
    assert [row["reason"] for row in copies] == ["arguments"]
    assert dlq("purge", task_id).returncode == 0


def test_a_valid_message_replayed_from_the_dead_letter_queue_runs(worker, uid):
    """The operator's path after, say, a rolling upgrade: a message a worker did not
    know is replayed once a worker that knows it runs. Here the dead-lettered copy is
    made with the worker's own function from a valid message held on a queue of the
    test's own."""
    from kombu import Queue

    from worker.dead_letter import dead_letter

    hold = Queue(
        f"orion.test.hold.{uid}", SAGA, routing_key=f"orion.test.hold.{uid}", auto_delete=False, durable=False
    )
    with celery_app.connection_for_write() as conn:
        channel = conn.channel()
        bound = hold(channel)
        bound.declare()
        task_id = str(uuid.uuid4())
        celery_app.send_task(
            "scheduled.audit_inventory", task_id=task_id, exchange=SAGA, routing_key=f"orion.test.hold.{uid}"
        )
        message = eventually(lambda: bound.get(no_ack=False), timeout=10)
        message.delivery_info["routing_key"] = "orion.saga"  # where a worker would have read it
        dead_letter(celery_app, message, "unknown_task", "held by the test")
        message.ack()
        bound.delete()
    assert dead_letters()[task_id]["reason"] == "unknown_task"

    done = dlq("replay", task_id)
    assert done.returncode == 0, done.stderr
    eventually(
        lambda: f"scheduled.audit_inventory[{task_id}] succeeded" in worker.log_path.read_text(), timeout=30
    )
    assert task_id not in dead_letters()


def test_a_message_that_names_no_origin_is_not_replayed_into_nowhere(worker):
    """Put on the dead-letter queue by something other than a worker or RabbitMQ's
    policy, it has no routing key to go back to: replay refuses and keeps it."""
    from worker.dead_letter import DEAD_LETTER, dead_letter_exchange, dead_letter_queue

    task_id = str(uuid.uuid4())
    with celery_app.connection_for_write() as conn:
        conn.Producer().publish(
            args_body(),
            exchange=dead_letter_exchange,
            routing_key=DEAD_LETTER,
            declare=[dead_letter_queue],
            headers={"id": task_id, "task": "scheduled.audit_inventory"},
            content_type="application/json",
            content_encoding="utf-8",
            serializer=None,
        )
    assert eventually(lambda: dead_letters().get(task_id), timeout=10)["reason"] == "?"
    refused = dlq("replay", task_id)
    assert refused.returncode == 1
    assert f"{task_id}: not replayed: it names no routing key" in refused.stderr
    assert "0 message(s) replayed" in refused.stdout
    assert task_id in dead_letters()
    assert dlq("purge", task_id).returncode == 0
