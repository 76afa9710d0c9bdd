#!/usr/bin/env bash
# Start (or stop) the real backing services the tests use, on loopback only:
#   Redis      127.0.0.1:$FLK_REDIS_PORT   (default 16379), persistent: AOF with appendfsync always
#              (FLK_REDIS_AOF=no / FLK_REDIS_APPENDFSYNC=everysec to change; a dedup store that
#              forgets acknowledged outcomes breaks first-write-wins)
#   PostgreSQL 127.0.0.1:$FLK_PG_PORT      (default 15432), database flk, user flk
# Installs Debian's redis-server / postgresql if missing (apt-get), keeps data in
# temporary directories under $FLK_SERVICES_DIR, and writes .services.env with
# FLK_TEST_REDIS_URL and FLK_TEST_POSTGRES_DSN for the test-suite.
# Usage: scripts/services.sh up|down|status
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SDIR=${FLK_SERVICES_DIR:-/tmp/flk-services-$(echo "$ROOT" | sha256sum | cut -c1-12)}
REDIS_PORT=${FLK_REDIS_PORT:-16379}
PG_PORT=${FLK_PG_PORT:-15432}
ENV_FILE="$ROOT/.services.env"

log() { echo "services: $*" >&2; }

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

install_missing() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  pg_bin >/dev/null 2>&1 || need+=(postgresql)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} (Debian packages)"
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # the Debian package may start its own instances on the default ports: harmless, ours use others
}

run_as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

redis_up() {
  mkdir -p "$SDIR/redis"
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then return 0; fi
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$SDIR/redis" --daemonize yes \
    --pidfile "$SDIR/redis/redis.pid" --logfile "$SDIR/redis/redis.log" --save "" --appendonly "${FLK_REDIS_AOF:-yes}" --appendfsync "${FLK_REDIS_APPENDFSYNC:-always}" \
    --maxclients 2000 >/dev/null
  for _ in $(seq 50); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "redis did not start"; return 1
}

pg_up() {
  local bin; bin=$(pg_bin)
  local data="$SDIR/pg"
  if psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1" >/dev/null 2>&1; then
    ensure_pg_role_db; return 0  # a server already answers on this port (another checkout's): reuse it
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$SDIR" 2>/dev/null || true
    chmod 700 "$data"
    run_as_pg "$bin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
  fi
  if run_as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then :; else
    run_as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $data -c fsync=on -c max_connections=300" start >/dev/null
  fi
  ensure_pg_role_db
}

ensure_pg_role_db() {
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='flk'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE ROLE flk LOGIN SUPERUSER" >/dev/null
  fi
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='flk'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE flk OWNER flk" >/dev/null
  fi
}

up() {
  install_missing
  redis_up
  pg_up
  cat > "$ENV_FILE" <<EOT
FLK_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
FLK_TEST_POSTGRES_DSN=postgresql://flk@127.0.0.1:$PG_PORT/flk
EOT
  log "redis on 127.0.0.1:$REDIS_PORT, postgres on 127.0.0.1:$PG_PORT (env in .services.env)"
}

down() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  local bin; bin=$(pg_bin 2>/dev/null) || true
  [ -n "${bin:-}" ] && [ -d "$SDIR/pg" ] && run_as_pg "$bin/pg_ctl" -D "$SDIR/pg" -m fast stop >/dev/null 2>&1 || true
  rm -f "$ENV_FILE"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping; psql -h 127.0.0.1 -p "$PG_PORT" -U flk -d flk -tAc "select 'postgres ok'" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
