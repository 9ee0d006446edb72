"""mail.smtp against a real SMTP server (aiosmtpd): one connection carries many
messages, bodies arrive intact (long, non-ASCII), and a connection the server
dropped costs one transient failure, after which sending works again."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import uuid

import pytest
from aiosmtpd.controller import Controller

from config import reset_settings
from mail import smtp
from mail.outbox import OutgoingEmail


class CountingInbox:
    def __init__(self) -> None:
        self.messages, self.peers, self._lock = [], set(), threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self._lock:
            self.peers.add(session.peer)
            self.messages.append(
                email.message_from_bytes(
                    envelope.original_content or envelope.content, policy=email.policy.default
                )
            )
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(monkeypatch):
    port = _free_port()
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(port))
    reset_settings()
    inbox = CountingInbox()
    running = [Controller(inbox, hostname="127.0.0.1", port=port)]
    running[0].start()
    yield inbox, running, port
    running[-1].stop()
    smtp._drop()
    monkeypatch.undo()
    reset_settings()


def _bodies(inbox) -> list[str]:
    return [m.get_content().replace("\r\n", "\n") for m in inbox.messages]


def _email(body: str, to: str = "buyer@example.com") -> OutgoingEmail:
    order = uuid.uuid4()
    return OutgoingEmail(
        1,
        order,
        "order_confirmation",
        to,
        f"Your Orion order {order}",
        body,
        f"<{order}.order_confirmation@orion.example>",
    )


LONG_BODY = (
    "Hello Ann,\n\n"
    + "".join(f"  {i} x SET OF 3 CAKE TINS PANTRY DESIGN (22720) 4.95 GBP\n" for i in range(1, 101))
    + "\nOrion Shop\n"
)


def test_many_messages_share_one_connection_and_arrive_intact(server):
    inbox, _, _ = server
    bodies = [LONG_BODY, "Hello Zoë,\n\nyour order is confirmed: 2 x CAFÉ MUG\n", "Hi\n"]
    for body in bodies:
        smtp.send(_email(body), "req-1")
    assert _bodies(inbox) == bodies
    assert inbox.messages[0]["X-Request-ID"] == "req-1"
    assert inbox.messages[0]["X-Orion-Template"] == "order_confirmation"
    assert len(inbox.peers) == 1  # one TCP connection for all three


def test_a_connection_is_replaced_after_the_message_limit(server, monkeypatch):
    inbox, _, _ = server
    monkeypatch.setattr(smtp, "MESSAGES_PER_CONNECTION", 2)
    for _ in range(5):
        smtp.send(_email("Hi\n"))
    assert len(inbox.messages) == 5
    assert len(inbox.peers) == 3  # 2 + 2 + 1


def _restart(running: list, port: int) -> CountingInbox:
    """The server goes away with our connection, and a new one comes up on its port."""
    running[-1].stop()
    restarted = CountingInbox()
    running.append(Controller(restarted, hostname="127.0.0.1", port=port))
    running[-1].start()
    return restarted


def test_a_dropped_connection_fails_once_then_sending_reconnects(server):
    _, running, port = server
    smtp.send(_email("first\n"))
    restarted = _restart(running, port)
    with pytest.raises(smtp.TRANSIENT_SMTP_ERRORS):
        smtp.send(_email("second\n"))  # on the dead connection: the task retries
    smtp.send(_email("third\n"))
    assert _bodies(restarted) == ["third\n"]


def test_an_idle_connection_is_checked_before_use(server, monkeypatch):
    _, running, port = server
    smtp.send(_email("first\n"))
    restarted = _restart(running, port)
    monkeypatch.setattr(smtp, "IDLE_CHECK_S", 0.0)  # every reuse counts as idle: NOOP first
    smtp.send(_email("second\n"))  # the NOOP finds the connection dead: a new one
    assert _bodies(restarted) == ["second\n"]
