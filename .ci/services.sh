# Sourced by .ci/run: a throwaway PostgreSQL and Redis for the history and live-book tests, in a temporary
# directory this CI run owns, on a free loopback port (PostgreSQL) and a Unix socket (Redis). Exports
# FH_TEST_POSTGRES_URL and FH_TEST_REDIS_URL; stop_services (run by .ci/run's EXIT trap) stops both and removes
# the directory. Best effort: a server that does not start only makes its tests skip (with the reason).

FH_SERVICES_DIR=""
_FH_PG_STOP=""
_FH_REDIS_PIDFILE=""

_fh_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_fh_start_postgres() {
    local bindir dir port as=()
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
        echo "note: PostgreSQL (Debian postgresql) is not installed: the PostgreSQL history tests skip" >&2
        return 0
    fi
    dir="$FH_SERVICES_DIR/pg"
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then             # initdb refuses to run as root: the cluster belongs to postgres
        if ! id postgres >/dev/null 2>&1; then
            echo "note: no postgres user to run PostgreSQL as: the PostgreSQL history tests skip" >&2
            return 0
        fi
        chown postgres "$dir"
        as=(runuser -u postgres --)
    fi
    port=$(_fh_free_port)
    if ! "${as[@]}" "$bindir/initdb" -D "$dir/data" --auth=trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1; then
        echo "note: initdb failed (see below): the PostgreSQL history tests skip" >&2
        tail -n 5 "$dir/initdb.log" >&2 || true
        return 0
    fi
    if ! "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=50" start \
            >/dev/null 2>&1; then
        echo "note: PostgreSQL did not start (see below): the PostgreSQL history tests skip" >&2
        tail -n 5 "$dir/server.log" >&2 || true
        "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
        return 0
    fi
    _FH_PG_STOP="${as[*]} $bindir/pg_ctl -D $dir/data -m fast -w -t 30 stop"
    export FH_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
    echo "PostgreSQL for the tests: $FH_TEST_POSTGRES_URL" >&2
}

_fh_start_redis() {
    local dir i
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "note: redis-server (Debian redis-server) is not installed: the Redis live-book tests skip" >&2
        return 0
    fi
    dir="$FH_SERVICES_DIR/redis"
    mkdir -p "$dir"
    if ! redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --daemonize yes \
            --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log" --save "" --appendonly no \
            >/dev/null 2>&1; then
        echo "note: redis-server did not start: the Redis live-book tests skip" >&2
        return 0
    fi
    _FH_REDIS_PIDFILE="$dir/redis.pid"
    for i in $(seq 1 100); do
        [ -S "$dir/redis.sock" ] && break
        sleep 0.1
    done
    if [ ! -S "$dir/redis.sock" ]; then
        echo "note: redis-server opened no socket in 10 s: the Redis live-book tests skip" >&2
        tail -n 5 "$dir/redis.log" >&2 || true
        return 0
    fi
    export FH_TEST_REDIS_URL="unix://$dir/redis.sock"
    echo "Redis for the tests: $FH_TEST_REDIS_URL" >&2
}

start_services() {
    FH_SERVICES_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fh-ci-services.XXXXXX") || return 0
    chmod 755 "$FH_SERVICES_DIR" || true     # PostgreSQL runs as postgres: it must reach its directory
    _fh_start_postgres || true
    _fh_start_redis || true
}

stop_services() {
    local pid
    if [ -n "$_FH_PG_STOP" ]; then
        $_FH_PG_STOP >/dev/null 2>&1 || echo "warning: PostgreSQL did not stop cleanly" >&2
        _FH_PG_STOP=""
    fi
    if [ -n "$_FH_REDIS_PIDFILE" ] && [ -f "$_FH_REDIS_PIDFILE" ]; then
        pid=$(cat "$_FH_REDIS_PIDFILE")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        _FH_REDIS_PIDFILE=""
    fi
    if [ -n "$FH_SERVICES_DIR" ]; then
        rm -rf "$FH_SERVICES_DIR"
        FH_SERVICES_DIR=""
    fi
}
