#!/bin/sh
# Start one tickwork role. prometheus-client's multi-process folder must be empty at start,
# or the files of a previous container's processes would be summed into this one's metrics.
set -eu
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  rm -rf "${PROMETHEUS_MULTIPROC_DIR:?}"
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi
exec tickwork "$@"
