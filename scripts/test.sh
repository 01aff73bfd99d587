#!/usr/bin/env bash
# The one test command: venv, package with its dev extra, services, lint, types, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "test.sh: creating .venv"
    python3 -m venv .venv
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
echo "test.sh: installing tickwork with its dev extra into $VIRTUAL_ENV"
python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

if ! bash scripts/services.sh; then
  if [ -n "${CI:-}" ]; then
    echo "test.sh: a service is missing (see above); under CI that fails the run" >&2
    exit 1
  fi
  echo "test.sh: a service is missing (see above); tests that need it will be skipped" >&2
fi

# Browser tests drive Debian's Chromium (Playwright's own browser download is not used).
if [ ! -x /usr/bin/chromium ]; then
  echo "test.sh: installing chromium with apt for the browser tests"
  if [ "$(id -u)" -eq 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
  $apt_get update -qq && DEBIAN_FRONTEND=noninteractive $apt_get install -y -qq chromium >/dev/null \
    || echo "test.sh: MISSING: could not install chromium; browser tests fail under CI (skip elsewhere)" >&2
fi

# The alert rules are checked and unit-tested with promtool (Debian's prometheus package); only
# the binary is used: the package's own Prometheus service is stopped and kept from starting.
if ! command -v promtool >/dev/null 2>&1; then
  echo "test.sh: installing prometheus (for promtool) with apt for the alert rule tests"
  if [ "$(id -u)" -eq 0 ]; then sudo_=""; else sudo_="sudo"; fi
  { $sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || echo "test.sh: MISSING: could not install prometheus (promtool); alert rule tests fail under CI (skip elsewhere)" >&2
  $sudo_ service prometheus stop >/dev/null 2>&1 || true
  $sudo_ update-rc.d prometheus disable >/dev/null 2>&1 || true
  $sudo_ systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# Container tests (tests/docker) run a private dockerd and build the image on a debootstrap base.
docker_missing=()
for tool in dockerd:docker.io docker-compose:docker-compose debootstrap:debootstrap; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "${tool%%:*}" >/dev/null 2>&1 || docker_missing+=("${tool#*:}")
done
if [ "${#docker_missing[@]}" -gt 0 ]; then
  echo "test.sh: installing ${docker_missing[*]} with apt for the container tests"
  if [ "$(id -u)" -eq 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
  $apt_get update -qq && DEBIAN_FRONTEND=noninteractive $apt_get install -y -qq "${docker_missing[@]}" >/dev/null \
    || echo "test.sh: MISSING: could not install ${docker_missing[*]}; container tests fail under CI (skip elsewhere)" >&2
fi

echo "test.sh: ruff"
ruff check .
ruff format --check .
echo "test.sh: mypy"
mypy tickwork benchmarks
echo "test.sh: import-linter (layers point down; pyproject.toml [tool.importlinter])"
lint-imports
echo "test.sh: pytest"
set +e
python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
fi
exit "$status"
