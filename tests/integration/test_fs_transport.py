"""The embedded broker (orionfs://): kombu's filesystem transport with batched reads."""

from __future__ import annotations

import time

from kombu import Connection

from worker.fs_transport import register


def connection(folder) -> Connection:
    register()
    options = {
        "data_folder_in": str(folder / "q"),
        "data_folder_out": str(folder / "q"),
        "control_folder": str(folder / "c"),
        "polling_interval": 0.01,
    }
    for sub in ("q", "c"):
        (folder / sub).mkdir(exist_ok=True)
    return Connection("orionfs://", transport_options=options)


def drain(queue, limit: int = 100) -> list[int]:
    """Read until the queue stays empty for 0.2 s (a new file shows within one rescan, 20 ms)."""
    got = []
    for _ in range(limit):
        try:
            message = queue.get(block=True, timeout=0.2)
        except queue.Empty:
            return got
        got.append(message.payload)
        message.ack()
    return got


def put_spaced(queue, values) -> None:
    # kombu names a message file by the millisecond it was written (then a random
    # uuid): messages of one millisecond have no order, in kombu as here.
    for value in values:
        queue.put(value)
        time.sleep(0.003)


def test_messages_come_out_in_order_across_batches(tmp_path):
    with connection(tmp_path) as conn:
        queue = conn.SimpleQueue("orion.test")
        put_spaced(queue, range(5))
        assert drain(queue) == [0, 1, 2, 3, 4]
        put_spaced(queue, range(5, 8))  # written after the first batch was listed
        assert drain(queue) == [5, 6, 7]
        queue.close()


def test_two_consumers_share_a_queue_without_duplicates(tmp_path):
    with connection(tmp_path) as producer, connection(tmp_path) as a, connection(tmp_path) as b:
        out = producer.SimpleQueue("orion.shared")
        for n in range(40):
            out.put(n)
        first, second = a.SimpleQueue("orion.shared"), b.SimpleQueue("orion.shared")
        seen = []
        while len(seen) < 40:  # interleave reads: each consumer's listing goes stale
            got = [m for consumer in (first, second) for m in drain(consumer, limit=3)]
            assert got, f"stalled after {len(seen)} messages"
            seen.extend(got)
        assert sorted(seen) == list(range(40))
        for q in (out, first, second):
            q.close()


def test_other_queues_messages_are_left_alone(tmp_path):
    with connection(tmp_path) as conn:
        saga, notify = conn.SimpleQueue("orion.saga"), conn.SimpleQueue("orion.notify")
        saga.put("s")
        notify.put("n")
        assert drain(saga) == ["s"]
        assert drain(notify) == ["n"]
        saga.close()
        notify.close()


def test_a_message_is_never_visible_half_written(tmp_path):
    """Messages are written under a hidden name and renamed in: a reader polling
    as fast as it can never takes an empty or partial file."""
    import threading

    payload = {"blob": "x" * 200_000}
    with connection(tmp_path) as producer, connection(tmp_path) as consumer:
        out, inbound = producer.SimpleQueue("orion.big"), consumer.SimpleQueue("orion.big")

        def write():
            for _ in range(30):
                out.put(payload)

        writer = threading.Thread(target=write)
        writer.start()
        got = drain(inbound, limit=60)
        writer.join()
        got += drain(inbound, limit=60)
        assert len(got) == 30 and all(message == payload for message in got)
        assert not [p for p in (tmp_path / "q").iterdir()]
        out.close()
        inbound.close()
