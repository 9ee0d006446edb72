"""Customer emails: rendered into the email outbox, sent over SMTP."""
