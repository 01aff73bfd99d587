#!/usr/bin/env bash
# Check MariaDB, Redis and RabbitMQ on loopback; start a stopped one with the commands listed in
# DEVELOPERS.md; say clearly what is missing.
set -u

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 2; i++)); do port_open "$2" && return 0; sleep 0.5; done
  return 1
}

start_service() { # name port command...
  local name=$1 port=$2; shift 2
  if port_open "$port"; then echo "services: $name is up on 127.0.0.1:$port"; return 0; fi
  echo "services: $name is down on 127.0.0.1:$port, starting it: $*"
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "services: MISSING: $name is not installed ('$1' not found); install it or set its URL" >&2
    return 1
  fi
  "$@" >/dev/null 2>&1 || true
  if wait_port "$name" "$port" 90; then echo "services: $name started"; return 0; fi
  echo "services: MISSING: $name did not come up on 127.0.0.1:$port within 90 s" >&2
  return 1
}

failed=0
start_service MariaDB 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || failed=1
start_service Redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || failed=1
start_service RabbitMQ 5672 rabbitmq-server -detached || failed=1
exit $failed
