#!/usr/bin/env bash
# A local cluster: the real services plus three chat nodes on 8001-8003 sharing them.
#
#   scripts/cluster.sh up      start services (scripts/services.sh up) and the nodes; print how to connect
#   scripts/cluster.sh down    stop the nodes (services keep running: `make services-down` stops them)
#   scripts/cluster.sh status  one line per node
#
# Environment: CLUSTER_PORTS ("8001 8002 8003"), CHAT_SERVICES_DIR (state dir shared with services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
STATE_DIR=$(realpath -m "${CHAT_SERVICES_DIR:-${TMPDIR:-/tmp}/chat-services-$(id -u)}")
CLUSTER_DIR="$STATE_DIR/cluster"
PORTS=${CLUSTER_PORTS:-"8001 8002 8003"}

secret() {
  # One secret for the whole local cluster, so a token from any node works on every node.
  local file="$CLUSTER_DIR/jwt-secret"
  if [ ! -s "$file" ]; then
    mkdir -p "$CLUSTER_DIR"
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' > "$file")
  fi
  cat "$file"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

origins() {
  # The web client of one node may be sent to another by a `reconnect` frame: every node's
  # page is an allowed origin on every node.
  local port list=""
  for port in $PORTS; do list="$list,http://127.0.0.1:$port,http://localhost:$port"; done
  echo "${list#,}"
}

node_env() {
  local port=$1 index=$2
  echo CHAT_PORT="$port" CHAT_NODE_ID="node-$port" CHAT_WORKER_ID="$index" CHAT_ALLOWED_ORIGINS="$(origins)" \
    CHAT_DATA_DIR="$CLUSTER_DIR/node-$port" CHAT_JWT_SECRET="$(secret)" \
    CHAT_CASSANDRA_HOSTS="127.0.0.1:${CASSANDRA_PORT:-9042}" CHAT_CASSANDRA_KEYSPACE=chat_dev \
    CHAT_CASSANDRA_CONSISTENCY=ONE CHAT_CASSANDRA_MIGRATE=1 \
    CHAT_REDIS_URL="redis://127.0.0.1:${REDIS_PORT:-6379}/0"
}

up() {
  PYTHON="$PYTHON" scripts/services.sh up
  mkdir -p "$CLUSTER_DIR"
  local index=1 port
  for port in $PORTS; do
    local pidfile="$CLUSTER_DIR/node-$port.pid" logfile="$CLUSTER_DIR/node-$port.log"
    if alive "$pidfile"; then
      echo "node-$port already running (pid $(cat "$pidfile"))"
    else
      # shellcheck disable=SC2046
      env $(node_env "$port" "$index") setsid "$PYTHON" -m chat serve >"$logfile" 2>&1 &
      echo $! >"$pidfile"
    fi
    index=$((index + 1))
  done
  for port in $PORTS; do
    local deadline=$((SECONDS + 60))
    until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
      if ! alive "$CLUSTER_DIR/node-$port.pid" || [ $SECONDS -ge $deadline ]; then
        echo "node-$port did not become ready; its log:" >&2
        tail -n 30 "$CLUSTER_DIR/node-$port.log" >&2
        exit 1
      fi
      sleep 0.2
    done
    echo "node-$port ready: http://127.0.0.1:$port (log: $CLUSTER_DIR/node-$port.log)"
  done
  echo
  echo "Tokens for any node: CHAT_JWT_SECRET=\$(cat $CLUSTER_DIR/jwt-secret) .venv/bin/chat token alice"
  echo "Open http://127.0.0.1:8001 and http://127.0.0.1:8002 in two windows and paste a token in each."
}

down() {
  local port
  for port in $PORTS; do
    local pidfile="$CLUSTER_DIR/node-$port.pid"
    if alive "$pidfile"; then
      kill -TERM "$(cat "$pidfile")"
      local deadline=$((SECONDS + 20))
      while alive "$pidfile" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
      alive "$pidfile" && kill -KILL "$(cat "$pidfile")"
      echo "node-$port stopped"
    fi
    rm -f "$pidfile"
  done
}

status() {
  local port
  for port in $PORTS; do
    if alive "$CLUSTER_DIR/node-$port.pid"; then
      echo "node-$port up   pid $(cat "$CLUSTER_DIR/node-$port.pid")"
    else
      echo "node-$port down"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
