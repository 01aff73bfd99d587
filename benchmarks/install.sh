#!/usr/bin/env bash
# What the benchmarks need beyond the dev extra: the bench extra (Celery, py-spy, matplotlib)
# and mysqlclient (for worker_throughput.py --also-mysqlclient), which builds against Debian's
# libmariadb-dev with pkg-config. Run from the repository root, in its venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
if ! dpkg -s libmariadb-dev pkg-config >/dev/null 2>&1; then
  $apt_get update -qq
  DEBIAN_FRONTEND=noninteractive $apt_get install -y -qq libmariadb-dev pkg-config >/dev/null
fi
python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]' 'mysqlclient>=2.2'
