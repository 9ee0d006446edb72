"""Operator tools: database setup, catalog import, replay, the local SMTP sink, the launcher."""
