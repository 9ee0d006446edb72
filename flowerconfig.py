"""Flower's settings, read by ``celery -A worker flower`` from the working directory.

- Basic auth always: ``FLOWER_BASIC_AUTH`` (``user:password``, Flower's own
  variable). Outside the embedded default Flower refuses to start without it;
  the embedded default makes one (user ``orion``) and keeps it in
  ``var/flower-basic-auth``, which the launcher's banner points to.
- Bound to ``WEB_HOST`` (127.0.0.1 unless configured), port ``FLOWER_PORT``.
- Persistent: its task history survives a restart (``var/flower.db``).
"""

from config import ConfigError, flower_basic_auth, get_settings

_settings = get_settings()
try:
    basic_auth = [flower_basic_auth(_settings)]
except ConfigError as exc:
    raise SystemExit(f"flower: {exc}") from None
address = _settings.web_host
port = _settings.flower_port
persistent = True
db = str(_settings.data_dir / "flower.db")
state_save_interval = 60_000  # ms: a crash loses at most a minute of history
natural_time = False
