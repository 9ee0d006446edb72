"""Orion settings, read from the environment when a process starts."""

from config.settings import (
    ConfigError,
    Settings,
    flower_basic_auth,
    get_settings,
    prepare_data_dir,
    reset_settings,
)

__all__ = [
    "ConfigError",
    "Settings",
    "flower_basic_auth",
    "get_settings",
    "prepare_data_dir",
    "reset_settings",
]
