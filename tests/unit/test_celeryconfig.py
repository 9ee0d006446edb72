"""The Celery settings that SPEC's guarantees depend on."""

import celeryconfig
from config import Settings


def test_delivery_guarantees():
    assert celeryconfig.task_acks_late is True
    assert celeryconfig.task_reject_on_worker_lost is True
    assert celeryconfig.worker_prefetch_multiplier == 1  # tests run in services mode
    assert celeryconfig.accept_content == ["json"] and celeryconfig.task_serializer == "json"
    assert celeryconfig.task_time_limit > celeryconfig.task_soft_time_limit > 0
    assert celeryconfig.task_default_queue_type == "classic"


def test_services_mode_confirms_publishes():
    settings = Settings.from_env({"ORION_MODE": "services"})
    assert settings.broker_url.startswith("amqp://")
    assert settings.broker_transport_options == {"confirm_publish": True}


def test_embedded_mode_shares_one_folder_for_in_and_out(tmp_path):
    settings = Settings.from_env({"ORION_DATA_DIR": str(tmp_path)})
    options = settings.broker_transport_options
    assert settings.broker_url == "orionfs://"  # kombu's filesystem transport, see worker/fs_transport.py
    assert options["data_folder_in"] == options["data_folder_out"]
    assert options["control_folder"] != options["data_folder_in"]
    assert settings.database_url == f"sqlite:///{tmp_path / 'orion.db'}"


def test_bad_number_names_the_variable():
    import pytest

    from config import ConfigError

    with pytest.raises(ConfigError, match="WEB_PORT"):
        Settings.from_env({"WEB_PORT": "eighty"})


def test_production_refuses_to_start_without_a_secret():
    import pytest

    from config import ConfigError

    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        Settings.from_env({"ORION_ENV": "production"}).require_jwt_secret()


def test_services_mode_is_production_unless_told_and_needs_a_256_bit_key():
    """RFC 8725 §3.5: no key from the repository outside development, and an HS256
    key of at least 256 bits."""
    import pytest

    from config import ConfigError
    from config.settings import DEV_SECRET

    with pytest.raises(ConfigError, match="JWT_SECRET_KEY is required"):
        Settings.from_env({"ORION_MODE": "services"}).require_jwt_secret()
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Settings.from_env({"ORION_MODE": "services", "JWT_SECRET_KEY": "k" * 31})
    with pytest.raises(ConfigError, match="ORION_ENV"):
        Settings.from_env({"ORION_ENV": "staging"})
    assert (
        Settings.from_env({"ORION_MODE": "services", "JWT_SECRET_KEY": "k" * 32}).jwt_secret_key == "k" * 32
    )
    assert (
        Settings.from_env({"ORION_MODE": "services", "ORION_ENV": "development"}).jwt_secret_key == DEV_SECRET
    )
    assert Settings.from_env({}).jwt_secret_key == DEV_SECRET  # the embedded default is development


def test_every_saga_task_is_routed_with_a_queue_and_its_stage_priority():
    from celery import Celery

    from tasks.saga import COMPENSATION_PRIORITY, ORDER_SAGA, STAGE_PRIORITY

    app = Celery("routes", set_as_current=False)
    app.config_from_object(celeryconfig)
    router = app.amqp.router
    for i, stage in enumerate(ORDER_SAGA):
        for name in [s.task for s in stage.steps] + ([stage.join] if stage.join else []):
            # A None priority (what Celery passes along a chain) keeps the route's;
            # chord_unlock (file:// results) reads the route's queue.
            route = router.route({"priority": None}, name)
            assert route["priority"] == STAGE_PRIORITY[i] and route["queue"].name.startswith("orion.")
        for step in stage.steps:
            if step.undo:
                assert router.route({}, step.undo)["priority"] == COMPENSATION_PRIORITY
    assert not hasattr(celeryconfig, "task_default_priority")  # it would outrank every route
    assert max(STAGE_PRIORITY.values()) < COMPENSATION_PRIORITY <= celeryconfig.MAX_PRIORITY
