#!/usr/bin/env bash
# The docker/compose.yml topology as local processes against the loopback services:
# `tickwork api`, 2 x `tickwork scheduler`, 2 x `tickwork worker`, each worker and scheduler with
# its own metrics port, in a namespace and database of their own.
#
#   scripts/cluster.sh start     create/migrate the database, start the five processes
#   scripts/cluster.sh status    which processes run, /healthz, every /metrics, the leader
#   scripts/cluster.sh token     print an admin token for the dashboard (http://127.0.0.1:$API_PORT/ui)
#   scripts/cluster.sh stop      SIGTERM (then SIGKILL after 15 s) the processes this script started
#
# Pid files, logs and the generated API secret (auth-secret, unless TICKWORK_AUTH_SECRET is set)
# live under $TICKWORK_CLUSTER_DIR (default results/cluster). Only the pids in those files are
# ever signalled, and only if the process is still a tickwork process.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DIR=${TICKWORK_CLUSTER_DIR:-$ROOT/results/cluster}
NAMESPACE=${TICKWORK_CLUSTER_NAMESPACE:-twcluster}
DB_NAME=${TICKWORK_CLUSTER_DB:-tickwork_cluster}
MYSQL_SERVER=${TICKWORK_CLUSTER_MYSQL:-mysql+pymysql://root@127.0.0.1:3306}
API_PORT=${TICKWORK_CLUSTER_API_PORT:-8765}
SCHEDULER_PORTS=(${TICKWORK_CLUSTER_SCHEDULER_PORTS:-9201 9202})
WORKER_PORTS=(${TICKWORK_CLUSTER_WORKER_PORTS:-9211 9212})
WORKER_ARGS=${TICKWORK_CLUSTER_WORKER_ARGS:---processes 1 --threads 4}
if [ -n "${PYTHON:-}" ]; then :
elif [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON=$VIRTUAL_ENV/bin/python
elif [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python
else PYTHON=python3; fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TICKWORK_DATABASE_URL="$MYSQL_SERVER/$DB_NAME"
export TICKWORK_BROKER_URL=${TICKWORK_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}
export TICKWORK_REDIS_URL=${TICKWORK_REDIS_URL:-redis://127.0.0.1:6379/0}
export TICKWORK_NAMESPACE=$NAMESPACE
export TICKWORK_LOG_FORMAT=${TICKWORK_LOG_FORMAT:-json}
# `tickwork api` and `tickwork token` refuse the built-in secret for MySQL/RabbitMQ: use the
# caller's, or one generated on first use and kept (mode 600) in the run directory.
if [ -z "${TICKWORK_AUTH_SECRET:-}" ]; then
  if [ ! -s "$DIR/auth-secret" ]; then
    mkdir -p "$DIR"
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$DIR/auth-secret.tmp")
    mv "$DIR/auth-secret.tmp" "$DIR/auth-secret"
  fi
  TICKWORK_AUTH_SECRET=$(cat "$DIR/auth-secret")
fi
export TICKWORK_AUTH_SECRET

NAMES=(api scheduler-1 scheduler-2 worker-1 worker-2)

log() { echo "cluster: $*"; }

pid_of() { # name -> pid if the pid file names a live tickwork process
  local file="$DIR/pids/$1.pid" pid
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr "\0" " " <"/proc/$pid/cmdline" | grep -Eq -- "-m (tickwork|dramatiq tickwork)" || return 1
  echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

http_ok() { # url -> 0 when it answers 2xx
  "$PYTHON" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=3).read()
EOF
}

launch() { # name, extra env assignments..., -- , tickwork args...
  local name=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  if pid_of "$name" >/dev/null; then log "$name already running (pid $(pid_of "$name"))"; return 0; fi
  # setsid: own process group, so a terminal's Ctrl-C does not reach it; stop.sh signals it.
  env "${envs[@]}" setsid "$PYTHON" -m tickwork "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name.pid"
  log "started $name (pid $!): tickwork $*"
}

write_prometheus_config() {
  local targets_s="" targets_w="" p
  for p in "${SCHEDULER_PORTS[@]}"; do targets_s+="\"127.0.0.1:$p\", "; done
  for p in "${WORKER_PORTS[@]}"; do targets_w+="\"127.0.0.1:$p\", "; done
  cat >"$DIR/prometheus.yml" <<EOF
# Written by scripts/cluster.sh: prometheus --config.file=$DIR/prometheus.yml
global: {scrape_interval: 15s}
scrape_configs:
  - job_name: tickwork-api
    static_configs: [{targets: ["127.0.0.1:$API_PORT"], labels: {role: api}}]
  - job_name: tickwork-scheduler
    static_configs: [{targets: [${targets_s%, }], labels: {role: scheduler}}]
  - job_name: tickwork-worker
    static_configs: [{targets: [${targets_w%, }], labels: {role: worker}}]
EOF
}

cmd_start() {
  mkdir -p "$DIR/pids" "$DIR/logs" "$DIR/prom"
  bash scripts/services.sh
  local name running=0
  for name in "${NAMES[@]}"; do pid_of "$name" >/dev/null && running=1; done
  if [ "$running" -eq 0 ]; then
    for port in "$API_PORT" "${SCHEDULER_PORTS[@]}" "${WORKER_PORTS[@]}"; do
      if port_busy "$port"; then
        log "port $port is taken; set TICKWORK_CLUSTER_API_PORT / _SCHEDULER_PORTS / _WORKER_PORTS" >&2
        exit 1
      fi
    done
  fi
  log "database $DB_NAME, namespace $NAMESPACE, logs in $DIR/logs"
  "$PYTHON" - "$MYSQL_SERVER" "$DB_NAME" <<'EOF'
import sys
from sqlalchemy import create_engine, text
engine = create_engine(sys.argv[1], isolation_level="AUTOCOMMIT")
with engine.connect() as conn:
    conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{sys.argv[2]}` CHARACTER SET utf8mb4"))
EOF
  "$PYTHON" -m tickwork db upgrade
  launch api -- api --host 127.0.0.1 --port "$API_PORT"
  local i
  for i in 1 2; do
    launch "scheduler-$i" "TICKWORK_METRICS_PORT=${SCHEDULER_PORTS[$((i - 1))]}" -- \
      scheduler --node-id "$NAMESPACE-scheduler-$i"
  done
  for i in 1 2; do
    local prom="$DIR/prom/worker-$i"
    if ! pid_of "worker-$i" >/dev/null; then rm -rf "$prom"; mkdir -p "$prom"; fi
    # shellcheck disable=SC2086
    launch "worker-$i" "TICKWORK_METRICS_PORT=${WORKER_PORTS[$((i - 1))]}" "PROMETHEUS_MULTIPROC_DIR=$prom" -- \
      worker $WORKER_ARGS
  done
  write_prometheus_config
  for i in $(seq 1 60); do http_ok "http://127.0.0.1:$API_PORT/healthz" && break; sleep 0.5; done
  cmd_status
  log "dashboard: http://127.0.0.1:$API_PORT/ui  (token: scripts/cluster.sh token)"
}

cmd_status() {
  local name pid down=0
  for name in "${NAMES[@]}"; do
    if pid=$(pid_of "$name"); then
      printf 'cluster: %-12s running  pid %s\n' "$name" "$pid"
    else
      printf 'cluster: %-12s STOPPED  (last lines of %s)\n' "$name" "$DIR/logs/$name.log"
      [ -f "$DIR/logs/$name.log" ] && tail -n 3 "$DIR/logs/$name.log" | sed 's/^/    /'
      down=1
    fi
  done
  local url
  for url in "http://127.0.0.1:$API_PORT/healthz" "http://127.0.0.1:$API_PORT/metrics"; do
    if http_ok "$url"; then log "ok   $url"; else log "DOWN $url"; down=1; fi
  done
  for port in "${SCHEDULER_PORTS[@]}" "${WORKER_PORTS[@]}"; do
    url="http://127.0.0.1:$port/metrics"
    if http_ok "$url"; then log "ok   $url"; else log "DOWN $url"; down=1; fi
  done
  "$PYTHON" - <<'EOF' || true
import json, os, redis
from tickwork import keys
ns = os.environ["TICKWORK_NAMESPACE"]
client = redis.Redis.from_url(os.environ["TICKWORK_REDIS_URL"], socket_timeout=2)
leader = client.get(keys.leader_key(ns))
workers = sum(1 for _ in client.scan_iter(keys.worker_heartbeat_pattern(ns)))
nodes = sum(1 for _ in client.scan_iter(keys.scheduler_node_pattern(ns)))
print(f"cluster: leader {leader.decode().split()[0] if leader else 'none'}, {nodes} scheduler node(s), {workers} worker heartbeat(s)")
EOF
  return $down
}

cmd_stop() {
  local name pid i
  for name in "${NAMES[@]}"; do
    if pid=$(pid_of "$name"); then
      kill -TERM "$pid" 2>/dev/null || true
      log "SIGTERM $name (pid $pid)"
    fi
  done
  for name in "${NAMES[@]}"; do
    if pid=$(pid_of "$name"); then
      for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) still running after 15 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -f "$DIR/pids/$name.pid"
  done
  log "stopped"
}

cmd_token() { "$PYTHON" -m tickwork token --role "${1:-admin}"; }

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop; cmd_start ;;
  token) cmd_token "${2:-admin}" ;;
  *) echo "usage: scripts/cluster.sh start|stop|status|restart|token [admin|viewer]" >&2; exit 2 ;;
esac
