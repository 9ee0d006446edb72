"""Where ``orion dlq replay`` sends a message back (tools.dlq.origin)."""

from tools.dlq import origin
from worker.dead_letter import HEADER


def test_the_worker_s_own_headers_come_first():
    headers = {
        f"{HEADER}exchange": "orion",
        f"{HEADER}routing-key": "orion.notify",
        "x-death": [{"exchange": "other", "routing-keys": ["other.queue"]}],
    }
    assert origin(headers) == ("orion", "orion.notify")


def test_rabbitmq_s_x_death_when_its_policy_moved_the_message():
    headers = {"x-death": [{"exchange": "orion", "routing-keys": ["orion.saga"], "count": 1}]}
    assert origin(headers) == ("orion", "orion.saga")


def test_no_origin_at_all_is_an_empty_routing_key():
    assert origin({}) == ("", "")
    assert origin({"x-death": []}) == ("", "")
