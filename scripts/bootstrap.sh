# Sourced by scripts/demo and scripts/test: a project virtualenv, and the local services up.
# Idempotent; reinstalls only when pyproject.toml changed.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BUS_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.bus-orchestrator-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing bus-orchestrator and its dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"

port_open() {
  "$VENV/bin/python" - "$1" <<'PY'
import socket, sys
with socket.socket() as s:
    s.settimeout(1)
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

wait_for_port() {  # name port seconds
  for _ in $(seq 1 "$3"); do
    port_open "$2" && return 0
    sleep 1
  done
  echo "$1 did not come up on port $2 within $3 s" >&2
  return 1
}

# Only the local defaults are started; URLs given in the environment are left alone.
ensure_services() {
  if [ -z "${BUS_AMQP_URL:-}${BUS_TEST_AMQP_URL:-}" ] && ! port_open 5672; then
    if command -v rabbitmq-server >/dev/null; then
      echo "starting RabbitMQ" >&2
      rabbitmq-server -detached >&2 || true
      wait_for_port RabbitMQ 5672 90
    else
      echo "RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not installed" >&2
    fi
  fi
  if [ -z "${BUS_DATABASE_URL:-}${BUS_TEST_DATABASE_URL:-}" ] && ! port_open 5432; then
    if command -v pg_ctlcluster >/dev/null; then
      echo "starting PostgreSQL" >&2
      for _ in 1 2 3; do
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start >&2 && break
        sleep 1  # a stale lock right after a crash clears itself
      done
      wait_for_port PostgreSQL 5432 60
    else
      echo "PostgreSQL is not running on 127.0.0.1:5432 and pg_ctlcluster is not installed" >&2
    fi
  fi
}
