"""Send an email-outbox row over SMTP with smtplib, on a connection kept per process.

A worker child sends one confirmation per order; opening a connection for each
(TCP, greeting, EHLO, QUIT) cost more than the message. The connection is
reused for up to ``MESSAGES_PER_CONNECTION`` messages, checked with ``NOOP``
when it sat idle longer than ``IDLE_CHECK_S`` (servers drop idle clients:
RFC 5321 §4.5.3.2.7 lets a server time out after 5 minutes), and dropped on
any error, so the retry opens a new one.
"""

from __future__ import annotations

import os
import smtplib
import time
from email.message import EmailMessage as MimeMessage
from email.mime.text import MIMEText
from email.policy import compat32
from typing import TYPE_CHECKING, Any

from config import Settings, get_settings

if TYPE_CHECKING:
    from mail.outbox import OutgoingEmail

TRANSIENT_SMTP_ERRORS = (smtplib.SMTPException, ConnectionError, TimeoutError, OSError)


class MailRefused(Exception):
    """The SMTP server refused this message for good: a 5yz ("permanent negative
    completion", RFC 5321 §4.2.1) reply to ``RCPT TO`` for its recipient or to its
    ``DATA``. Retrying cannot help. ``code``: the reply code; ``stage``:
    ``recipient`` or ``message``. Not one of TRANSIENT_SMTP_ERRORS."""

    def __init__(self, code: int, stage: str) -> None:
        super().__init__(f"the mail server refused the {stage} ({code})")
        self.code, self.stage = code, stage


def _refusal(exc: BaseException) -> MailRefused | None:
    """The permanent refusal ``exc`` reports, if it is one. Left transient, as
    about Orion's own set-up (an operator fixes it, and the retries or the safety
    net send the mail): a 5yz to ``MAIL FROM`` or to authentication, and a 5yz
    with an enhanced status code of class 5.7 (RFC 3463: security or policy, e.g.
    "5.7.1 relaying denied", "5.7.0 authentication required")."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
        if replies and all(500 <= code < 600 and not _policy(text) for code, text in replies):
            return MailRefused(min(code for code, _ in replies), "recipient")
    elif (
        isinstance(exc, smtplib.SMTPDataError) and 500 <= exc.smtp_code < 600 and not _policy(exc.smtp_error)
    ):
        return MailRefused(exc.smtp_code, "message")
    return None


def _policy(text: bytes | str) -> bool:
    """The reply text starts with an enhanced status code of class 5.7 (RFC 3463 §3.8)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return text.lstrip().startswith("5.7.")


MESSAGES_PER_CONNECTION = 100
IDLE_CHECK_S = 5.0
# A send gives up after SEND_TIMEOUT_S; the NOOP before it and the QUIT after the
# last message of a connection after CHECK_TIMEOUT_S, so one attempt stays well
# inside the email outbox's 15 s claim (mail.outbox.CLAIM_TIMEOUT).
SEND_TIMEOUT_S, CHECK_TIMEOUT_S = 10.0, 2.0

# as_bytes() with CRLF line ends: smtplib sends bytes as they are (RFC 5321 §2.3.8).
_WIRE = compat32.clone(linesep="\r\n")
_connection: dict[str, Any] = {}  # pid, client, sent, last_used, server


def send(message: OutgoingEmail, correlation_id: str | None = None) -> None:
    """Deliver ``message`` (``mail.outbox.OutgoingEmail``) to the configured SMTP server.

    The Message-ID is fixed per outbox row, so a rare resend after a crash is
    recognisable as the same message. Raises MailRefused when the server refuses
    it for good, else one of TRANSIENT_SMTP_ERRORS; the connection is closed
    then, and the next call opens a new one.
    """
    settings = get_settings()
    raw = _mime(message, settings.mail_from, correlation_id)
    client = _client(settings)
    try:
        if isinstance(raw, MimeMessage):
            client.send_message(raw)
        else:
            client.sendmail(settings.mail_from, [message.to_address], raw)
    except BaseException as exc:
        _drop()
        refused = _refusal(exc)
        if refused is not None:
            raise refused from exc
        raise
    _connection["sent"] += 1
    _connection["last_used"] = time.monotonic()
    if _connection["sent"] >= MESSAGES_PER_CONNECTION:
        _drop(quit_=True)


def _mime(message: OutgoingEmail, sender: str, correlation_id: str | None) -> MimeMessage | bytes:
    """The message as bytes (MIMEText: a fifth of ``email.message.EmailMessage``'s
    CPU), or as an EmailMessage when an address is not ASCII (SMTPUTF8, RFC 6531)."""
    headers = {
        "From": sender,
        "To": message.to_address,
        "Subject": message.subject,
        "Message-ID": message.message_id,
        "X-Orion-Order": str(message.order_id),
        "X-Orion-Template": message.template,
    }
    if correlation_id:
        headers["X-Request-ID"] = correlation_id
    if not (message.to_address + sender + message.subject).isascii():
        mime = MimeMessage()
        for name, value in headers.items():
            mime[name] = value
        mime.set_content(message.body)
        return mime
    # ASCII bodies go as 7bit text, others in base64 (MIMEText's choice for utf-8).
    text = MIMEText(message.body, "plain", "us-ascii" if message.body.isascii() else "utf-8")
    for name, value in headers.items():
        text[name] = value
    return text.as_bytes(policy=_WIRE)


def _client(settings: Settings) -> smtplib.SMTP:
    server = (settings.smtp_host, settings.smtp_port)
    if _connection.get("pid") == os.getpid() and _connection.get("server") == server:
        client: smtplib.SMTP = _connection["client"]
        if time.monotonic() - _connection["last_used"] <= IDLE_CHECK_S:
            return client
        sock = client.sock  # None once smtplib has closed the connection
        try:
            if sock is not None:
                sock.settimeout(CHECK_TIMEOUT_S)
                if client.noop()[0] == 250:
                    sock.settimeout(SEND_TIMEOUT_S)
                    return client
        except TRANSIENT_SMTP_ERRORS:
            pass
        _drop()
    _connection.clear()  # a connection inherited through fork belongs to the parent
    client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SEND_TIMEOUT_S)
    _connection.update(pid=os.getpid(), client=client, sent=0, last_used=time.monotonic(), server=server)
    return client


def _drop(quit_: bool = False) -> None:
    client = _connection.pop("client", None)
    _connection.clear()
    if client is None:
        return
    try:
        if quit_ and client.sock is not None:
            client.sock.settimeout(CHECK_TIMEOUT_S)
            client.quit()
        else:
            client.close()
    except TRANSIENT_SMTP_ERRORS:
        client.close()
