"""SPEC "Availability and abuse": what a customer reads about a fault is a short,
stable text, whatever the exception said (SQL, parameters, host names)."""

from __future__ import annotations

import smtplib

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import IntegrityError, OperationalError

from payments import ProviderError, ProviderTimeout, ProviderUnavailable
from tasks.journal import describe, public_error

SECRET_SQL = (
    '(psycopg.OperationalError) connection to server at "db.internal" (10.0.0.7), '
    "port 5432 failed\n[SQL: UPDATE orders SET payment_token=%(t)s]\n"
    "[parameters: {'t': 'tok_visa'}]"
)


@pytest.mark.parametrize(
    "exc, text",
    [
        (
            OperationalError(
                "UPDATE orders SET payment_token=%(t)s",
                {"t": "tok_visa"},
                Exception('connection to server at "db.internal" failed'),
            ),
            "database unavailable",
        ),
        (
            IntegrityError("INSERT INTO reservations ...", {}, Exception("duplicate key")),
            "conflicting update",
        ),
        (ProviderUnavailable("sandbox: processing error"), "payment provider unavailable"),
        (ProviderTimeout("sandbox: authorization call 1 for o-1 timed out"), "payment provider unavailable"),
        (ProviderError("sandbox: au_123 already has a capture"), "payment provider refused the request"),
        (
            smtplib.SMTPServerDisconnected("Connection unexpectedly closed: smtp.internal"),
            "email server unavailable",
        ),
        (SoftTimeLimitExceeded(), "step timed out"),
        (KeyError("payment_token"), "internal error"),
        (RuntimeError(SECRET_SQL), "internal error"),
    ],
)
def test_a_fault_reads_as_a_stable_text(exc, text):
    assert public_error(exc) == text


def test_the_full_text_is_kept_for_the_logs():
    text = describe(RuntimeError(SECRET_SQL))
    assert text.startswith("RuntimeError: ") and "db.internal" in text
    assert len(describe(RuntimeError("x" * 2000))) == 500
