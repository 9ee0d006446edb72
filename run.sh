#!/usr/bin/env bash
# Orion's entry point.
#   ./run.sh            install (first time) and start the whole platform, embedded default
#   ./run.sh test       run the test suite (needs PostgreSQL, RabbitMQ and Redis on local ports)
#   ./run.sh lint       ruff (lint and format check) and mypy, as configured in pyproject.toml
#   ./run.sh COMMAND    any other command of Orion's command line, e.g. ./run.sh replay ...
#                       (the same as .venv/bin/orion COMMAND; ./run.sh --help lists them)
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  # Orion itself, editable, for the ``orion`` command (pyproject.toml); the pins above
  # already hold its dependencies.
  .venv/bin/python -m pip install -q --no-deps -e . 2>&1 | grep -v -e '^\s*$' -e '!!' -e '\*\*\*' \
    -e 'BuildBackendWarning' -e 'careful with folders' -e 'may take precedence' -e 'with strategy' || true
  echo "$want" > "$stamp"
fi

# The pages' browser libraries (Socket.IO client, Swagger UI, Chart.js) come from npm
# (package-lock.json), served locally.
npm_stamp=node_modules/.orion-lock.sha256
npm_want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$npm_stamp" 2>/dev/null)" != "$npm_want" ]; then
  if command -v npm >/dev/null; then
    npm ci --no-audit --no-fund --loglevel=error && echo "$npm_want" > "$npm_stamp"
  else
    echo "run.sh: npm not found; the pages need node_modules (socket.io-client, swagger-ui-dist, chart.js; install Node.js and npm)" >&2
  fi
fi

# Test tools from Debian: Chromium for the browser tests (Playwright's own download
# is not reachable), a compose tool to check docker-compose.yml (no engine runs it),
# and Prometheus with promtool for tests/integration/test_prometheus.py.
apt_install() { # command, package, [apt-get option]
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q ${3:-} "$2" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ${3:-} "$2" >/dev/null; }
  else
    echo "run.sh: the tests need $1 (apt-get install $2)" >&2
  fi
}
no_service() { # the package's own service, started by its installation: stopped and disabled
  if [ -d /run/systemd/system ]; then
    systemctl disable --now "$1" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$1" ]; then
    "/etc/init.d/$1" stop >/dev/null 2>&1 || true
  fi
}
ensure_test_tools() {
  apt_install chromium chromium
  docker compose version >/dev/null 2>&1 || apt_install docker-compose docker-compose
  # The test runs its own Prometheus on a free port; the package's would listen on 9090.
  command -v promtool >/dev/null || { apt_install promtool prometheus --no-install-recommends; no_service prometheus; }
}

cmd=${1:-up}
[ $# -gt 0 ] && shift
case "$cmd" in
  test) ensure_test_tools; exec .venv/bin/python -m pytest "$@" ;;
  lint) .venv/bin/ruff check . && .venv/bin/ruff format --check . && exec .venv/bin/mypy ;;
  *)    exec .venv/bin/orion "$cmd" "$@" ;;
esac
