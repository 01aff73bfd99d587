#!/usr/bin/env bash
# A local stand-in for python:3.11-slim, for machines that cannot pull from a registry: Debian
# bookworm made with `debootstrap --variant=minbase` (Debian's Python 3.11, CA certificates), a venv
# at /opt/venv first on PATH, imported into the docker daemon that DOCKER_HOST names.
#
#   bash scripts/docker-base.sh [IMAGE]       default IMAGE: tickwork-base:bookworm
#   docker build --build-arg BASE_IMAGE=tickwork-base:bookworm -f docker/Dockerfile -t tickwork:dev .
#
# Needs root (debootstrap and chroot) and Debian's package mirror (DEBOOTSTRAP_MIRROR, default
# debootstrap's own). The root file system is cached as a tarball under
# ${TICKWORK_CACHE_DIR:-~/.cache/tickwork}/, keyed by this script's content: only the first run
# downloads and unpacks packages; later runs import the tarball (a few seconds).
set -euo pipefail

PATH="$PATH:/usr/sbin:/sbin"  # debootstrap and chroot, for a root shell without sbin on PATH
IMAGE=${1:-tickwork-base:bookworm}
SUITE=bookworm
CACHE_DIR=${TICKWORK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tickwork}
KEY=$(sha256sum "$0" | cut -c1-12)
TARBALL=$CACHE_DIR/docker-base-$SUITE-$KEY.tar
DOCKER=${DOCKER:-docker}

log() { echo "docker-base: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "debootstrap and chroot need root; run as root (or with sudo)"
  exit 2
fi
for tool in debootstrap "$DOCKER"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "MISSING: '$tool' not found (Debian: apt-get install debootstrap docker.io)"
    exit 2
  fi
done

if [ "$("$DOCKER" image inspect --format '{{index .Config.Labels "org.tickwork.base-key"}}' "$IMAGE" 2>/dev/null)" = "$KEY" ]; then
  log "$IMAGE is up to date ($KEY)"
  echo "$IMAGE"
  exit 0
fi

mkdir -p "$CACHE_DIR"
# One builder at a time per cache: a second caller waits, then finds the tarball made.
exec 9>"$CACHE_DIR/docker-base.lock"
flock 9
if [ ! -s "$TARBALL" ]; then
  started=$SECONDS
  work=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  log "debootstrap $SUITE into $work/rootfs (first run: downloads Debian packages)"
  # shellcheck disable=SC2086
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$work/rootfs" ${DEBOOTSTRAP_MIRROR:-} >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    log "debootstrap failed (log above)"
    exit 1
  }
  chroot "$work/rootfs" /usr/bin/python3 -m venv /opt/venv
  # What a slim image leaves out: package lists and caches, documentation, translations.
  rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/cache/apt/* \
    "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* "$work/rootfs"/usr/share/info/* \
    "$work/rootfs"/usr/share/locale/* "$work/rootfs"/var/log/*.log "$work/rootfs"/var/cache/debconf/*-old
  find "$work/rootfs" -name __pycache__ -prune -exec rm -rf {} +
  tar --numeric-owner -C "$work/rootfs" -cf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$TARBALL"
  find "$CACHE_DIR" -maxdepth 1 -name "docker-base-$SUITE-*.tar" ! -name "${TARBALL##*/}" -delete
  log "root file system cached in $TARBALL ($((SECONDS - started)) s)"
fi

"$DOCKER" import \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL org.tickwork.base-key=$KEY" \
  --change 'CMD ["python3"]' \
  "$TARBALL" "$IMAGE" >/dev/null
log "imported $IMAGE ($KEY)"
echo "$IMAGE"
