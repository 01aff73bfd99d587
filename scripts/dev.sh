#!/usr/bin/env bash
# Set up and run tickwork in the embedded mode: SQLite file, in-process broker, one process.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install --quiet --disable-pip-version-check -e .
# `tickwork dev` migrates its SQLite file itself; --migrate does it for a MySQL URL too, as the
# separate `tickwork db upgrade` step this script used to run did.
exec tickwork dev --migrate "$@"
