"""Metrics (prometheus-client) and, later, structured logs."""
