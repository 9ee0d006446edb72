"""Which SMTP replies are a permanent refusal of a message (RFC 5321 §4.2.1: 5yz),
and which leave it to the retries."""

from __future__ import annotations

import smtplib

import pytest

from mail.smtp import _refusal


@pytest.mark.parametrize(
    "exc, expected",
    [
        (smtplib.SMTPRecipientsRefused({"a@x.example": (550, b"no such user")}), (550, "recipient")),
        (smtplib.SMTPRecipientsRefused({"a@x.example": (553, b"bad address")}), (553, "recipient")),
        (smtplib.SMTPDataError(554, b"content rejected"), (554, "message")),
    ],
)
def test_a_5yz_for_the_recipient_or_the_message_is_a_refusal(exc, expected):
    refused = _refusal(exc)
    assert (refused.code, refused.stage) == expected


@pytest.mark.parametrize(
    "exc",
    [
        smtplib.SMTPRecipientsRefused({"a@x.example": (450, b"mailbox busy")}),
        smtplib.SMTPDataError(451, b"local error"),
        smtplib.SMTPSenderRefused(550, b"sender not allowed", "orion@x.example"),  # Orion's set-up
        smtplib.SMTPRecipientsRefused({"a@x.example": (550, b"5.7.1 relaying denied")}),  # ditto
        smtplib.SMTPDataError(554, b"5.7.0 authentication required"),
        smtplib.SMTPServerDisconnected("gone"),
        ConnectionRefusedError(),
    ],
)
def test_a_4yz_a_sender_refusal_or_a_lost_connection_is_left_to_the_retries(exc):
    assert _refusal(exc) is None
