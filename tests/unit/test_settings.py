"""Settings read from the environment: the checks that keep them coherent."""

from __future__ import annotations

import pytest

from config import ConfigError, Settings, flower_basic_auth


def test_the_payment_window_must_end_before_the_stock_hold():
    with pytest.raises(ConfigError, match=r"PAYMENT_WINDOW_SECONDS .* RESERVATION_HOLD_SECONDS"):
        Settings.from_env({"PAYMENT_WINDOW_SECONDS": "7200", "RESERVATION_HOLD_SECONDS": "3600"})
    settings = Settings.from_env({"PAYMENT_WINDOW_SECONDS": "3000", "RESERVATION_HOLD_SECONDS": "3600"})
    assert settings.payment_window_s < settings.reservation_hold_s


def test_reminder_ages_are_sorted_numbers_and_a_bad_one_is_named():
    assert Settings.from_env({"PAYMENT_REMINDER_AFTER_SECONDS": "86400,3600"}).payment_reminder_ages_s == (
        3600.0,
        86400.0,
    )
    with pytest.raises(ConfigError, match="PAYMENT_REMINDER_AFTER_SECONDS"):
        Settings.from_env({"PAYMENT_REMINDER_AFTER_SECONDS": "1h"})


def test_flower_needs_credentials_outside_the_embedded_default(tmp_path):
    services = Settings.from_env({"ORION_MODE": "services"})
    with pytest.raises(ConfigError, match="FLOWER_BASIC_AUTH"):
        flower_basic_auth(services, {})
    with pytest.raises(ConfigError, match="FLOWER_BASIC_AUTH"):
        flower_basic_auth(services, {"FLOWER_BASIC_AUTH": "no-colon"})
    assert flower_basic_auth(services, {"FLOWER_BASIC_AUTH": "ops:pw"}) == "ops:pw"
    embedded = Settings.from_env({"ORION_DATA_DIR": str(tmp_path)})
    made = flower_basic_auth(embedded, {})
    assert made.startswith("orion:") and len(made) > 12
    assert flower_basic_auth(embedded, {}) == made, "kept for the next start"
    assert (tmp_path / "flower-basic-auth").stat().st_mode & 0o077 == 0, "readable by its owner only"


@pytest.mark.parametrize("soft, hard", [("91", "90"), ("-1", "90"), ("0", "0")])
def test_task_time_limits_must_fit_together(soft, hard):
    with pytest.raises(ConfigError, match="TASK_SOFT_TIME_LIMIT_SECONDS"):
        Settings.from_env({"TASK_SOFT_TIME_LIMIT_SECONDS": soft, "TASK_TIME_LIMIT_SECONDS": hard})
    assert Settings.from_env({"TASK_SOFT_TIME_LIMIT_SECONDS": "0"}).task_soft_time_limit_s == 0


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_the_email_rate_per_address_is_a_positive_integer(value):
    assert Settings.from_env({}).email_max_per_address_per_hour == 30
    assert Settings.from_env({"EMAIL_MAX_PER_ADDRESS_PER_HOUR": "5"}).email_max_per_address_per_hour == 5
    with pytest.raises(ConfigError, match="EMAIL_MAX_PER_ADDRESS_PER_HOUR"):
        Settings.from_env({"EMAIL_MAX_PER_ADDRESS_PER_HOUR": value})


@pytest.mark.parametrize(
    "env",
    [
        {"SOCKETIO_MAX_SUBSCRIPTIONS": "0"},
        {"SOCKETIO_SUBSCRIBE_PER_SECOND": "0"},
        {"SOCKETIO_MAX_SUBSCRIPTIONS": "x"},
    ],
)
def test_socket_subscription_limits_must_allow_a_subscription(env):
    defaults = Settings.from_env({})
    assert (defaults.socket_max_subscriptions, defaults.socket_subscribe_per_second) == (100, 10.0)
    with pytest.raises(ConfigError, match="SOCKETIO_"):
        Settings.from_env(env)


def test_inline_steps_are_a_yes_or_no_and_a_bad_value_is_named():
    assert Settings.from_env({}).inline_steps is True
    assert Settings.from_env({"SAGA_INLINE_STEPS": "false"}).inline_steps is False
    assert Settings.from_env({"SAGA_INLINE_STEPS": " On "}).inline_steps is True
    with pytest.raises(ConfigError, match="SAGA_INLINE_STEPS must be true or false, got 'sometimes'"):
        Settings.from_env({"SAGA_INLINE_STEPS": "sometimes"})
