#!/usr/bin/env bash
# Orion's entry point.
#   ./run.sh            install (first time) and start the whole platform, embedded default
#   ./run.sh test       run the test suite (needs PostgreSQL, RabbitMQ and Redis on local ports)
#   ./run.sh replay ... replay the dataset through the running platform (python -m tools.replay)
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
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
# is not reachable), and a compose tool to check docker-compose.yml (no engine runs it).
apt_install() { # command, package
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; }
  else
    echo "run.sh: the tests need $1 (apt-get install $2)" >&2
  fi
}
ensure_test_tools() {
  apt_install chromium chromium
  docker compose version >/dev/null 2>&1 || apt_install docker-compose docker-compose
}

cmd=${1:-up}
[ $# -gt 0 ] && shift
case "$cmd" in
  up)      exec .venv/bin/python -m tools.launch "$@" ;;
  test)    ensure_test_tools; exec .venv/bin/python -m pytest "$@" ;;
  replay)  exec .venv/bin/python -m tools.replay "$@" ;;
  catalog) exec .venv/bin/python -m tools.catalog "$@" ;;
  *) echo "usage: ./run.sh [up|test|replay|catalog] [args...]" >&2; exit 2 ;;
esac
