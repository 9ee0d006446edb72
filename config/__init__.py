"""Orion settings, read from the environment when a process starts."""
from config.settings import Settings, get_settings, reset_settings

__all__ = ["Settings", "get_settings", "reset_settings"]
