"""Send an email-outbox row over SMTP with smtplib."""
from __future__ import annotations

import smtplib
from email.message import EmailMessage as MimeMessage

from config import get_settings
from models import EmailMessage

TRANSIENT_SMTP_ERRORS = (smtplib.SMTPException, ConnectionError, TimeoutError, OSError)


def send(message: EmailMessage, correlation_id: str | None = None) -> None:
    """Deliver ``message`` to the configured SMTP server.

    The Message-ID is fixed per outbox row, so a rare resend after a crash is
    recognisable as the same message. Raises one of TRANSIENT_SMTP_ERRORS.
    """
    settings = get_settings()
    mime = MimeMessage()
    mime["From"] = settings.mail_from
    mime["To"] = message.to_address
    mime["Subject"] = message.subject
    mime["Message-ID"] = message.message_id
    mime["X-Orion-Order"] = str(message.order_id)
    mime["X-Orion-Template"] = message.template
    if correlation_id:
        mime["X-Request-ID"] = correlation_id
    mime.set_content(message.body)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as client:
        client.send_message(mime)
