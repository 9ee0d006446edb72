"""End-to-end: Orion started as a user starts it, driven over HTTP."""
