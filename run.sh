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

cmd=${1:-up}
[ $# -gt 0 ] && shift
case "$cmd" in
  up)      exec .venv/bin/python -m tools.launch "$@" ;;
  test)    exec .venv/bin/python -m pytest "$@" ;;
  replay)  exec .venv/bin/python -m tools.replay "$@" ;;
  catalog) exec .venv/bin/python -m tools.catalog "$@" ;;
  *) echo "usage: ./run.sh [up|test|replay|catalog] [args...]" >&2; exit 2 ;;
esac
