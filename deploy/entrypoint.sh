#!/bin/sh
# Each container writes its Prometheus samples to a folder of its own under the
# shared METRICS_ROOT volume (process ids repeat across containers), and the web's
# /metrics merges every folder there.
set -e
if [ -n "$METRICS_ROOT" ]; then
  PROMETHEUS_MULTIPROC_DIR="$METRICS_ROOT/$(hostname)"
  export PROMETHEUS_MULTIPROC_DIR
  rm -rf "$PROMETHEUS_MULTIPROC_DIR"
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi
exec "$@"
