#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests and CI, on 127.0.0.1 only, its data in a temp dir.
#
#   .ci/postgres.sh start DIR   creates DIR (absent or empty), runs initdb with a random password
#                               (kept in DIR/password), starts the server on a free port of
#                               127.0.0.1 (its Unix socket in DIR) and prints one line to stdout:
#                               postgres://waba_test:PASSWORD@127.0.0.1:PORT/postgres
#   .ci/postgres.sh stop DIR    stops that server (fast shutdown) and removes DIR.
#
# Run as root, the server runs as the `postgres` system user (initdb and postgres refuse root):
# DIR is chowned to it, so DIR's parent must be reachable by that user (/tmp is). The binaries
# are found with `pg_config --bindir`, else in the newest /usr/lib/postgresql/*/bin, else on PATH.
# Everything but the URL goes to stderr or to files in DIR (DIR/initdb.log, DIR/log).
# The server is for tests: fsync=off, 300 connections, scram-sha-256 password auth.
set -euo pipefail

readonly PG_USER=waba_test
readonly MARKER=.waba-monitor-test-postgres

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

usage() {
    die "usage: $0 start DIR | stop DIR"
}

# The directory holding initdb, pg_ctl and postgres.
find_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
            echo "$dir"
            return
        fi
    fi
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
        echo "$dir"
        return
    fi
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dir=$(dirname "$(readlink -f "$(command -v initdb)")")
        if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
            echo "$dir"
            return
        fi
    fi
    die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: not in \`pg_config --bindir\`, /usr/lib/postgresql/*/bin or PATH (Debian: apt-get install postgresql)"
}

# Runs a command as the server's owner: `postgres` when we are root, ourselves otherwise.
as_owner() {
    if [[ $EUID -eq 0 ]]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        elif command -v setpriv >/dev/null 2>&1; then
            setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
        else
            die "running as root, but neither runuser nor setpriv is there to switch to the postgres user"
        fi
    else
        "$@"
    fi
}

# A TCP port of 127.0.0.1 that nothing listens on right now.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local port tries
    for ((tries = 0; tries < 200; tries++)); do
        port=$((20000 + RANDOM % 40000))
        if ! (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free TCP port found on 127.0.0.1"
}

start() {
    local dir=$1 bindir password port attempt
    bindir=$(find_bindir)
    mkdir -p -- "$dir"
    dir=$(cd -- "$dir" && pwd -P)
    if [[ -n $(ls -A -- "$dir") ]]; then
        die "$dir is not empty: give a new or empty directory"
    fi
    touch -- "$dir/$MARKER"
    # The path goes into pg_ctl's -o options unquoted, and the Unix socket ($dir/.s.PGSQL.PORT)
    # must fit in sun_path (107 bytes).
    if [[ $dir =~ [[:space:]] ]]; then
        die "$dir has whitespace in its path: use a plain temp dir"
    fi
    if ((${#dir} > 90)); then
        die "$dir is too long a path for the server's Unix socket: use a shorter temp dir"
    fi

    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root, but there is no postgres user to run the server as"
        chown postgres: -- "$dir"
        chmod 700 -- "$dir"
        if ! as_owner test -w "$dir"; then
            die "the postgres user cannot write to $dir (is a parent directory closed to it?): use a temp dir such as /tmp/..."
        fi
    fi

    password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    [[ ${#password} -eq 32 ]] || die "could not generate a password from /dev/urandom"
    (umask 077 && printf '%s\n' "$password" >"$dir/password")
    if [[ $EUID -eq 0 ]]; then
        chown postgres: -- "$dir/password"
    fi

    # Tools run with the data directory's parent as the working directory (root's may be closed
    # to the postgres user).
    cd -- "$dir"
    if ! as_owner "$bindir/initdb" -D "$dir/data" --locale=C --encoding=UTF8 --auth=scram-sha-256 \
        --username="$PG_USER" --pwfile="$dir/password" >"$dir/initdb.log" 2>&1; then
        cat -- "$dir/initdb.log" >&2
        die "initdb failed (log above, also in $dir/initdb.log)"
    fi

    # Another process may take the port between the probe and the bind: try a few ports.
    for ((attempt = 1; ; attempt++)); do
        port=$(free_port)
        if as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
            -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off -c max_connections=300" \
            start >"$dir/pg_ctl.log" 2>&1; then
            break
        fi
        if ((attempt < 5)) && grep -q 'could not bind\|could not create any TCP/IP sockets\|already in use' "$dir/log" 2>/dev/null; then
            echo "postgres.sh: port $port was taken, trying another" >&2
            continue
        fi
        cat -- "$dir/pg_ctl.log" >&2
        [[ -f $dir/log ]] && tail -n 30 -- "$dir/log" >&2
        die "the server did not start (logs above, also in $dir/log)"
    done
    echo "$port" >"$dir/port"
    echo "postgres://$PG_USER:$password@127.0.0.1:$port/postgres"
}

stop() {
    local dir=$1 bindir
    [[ -e $dir ]] || return 0
    dir=$(cd -- "$dir" && pwd -P)
    [[ -f $dir/$MARKER ]] || die "$dir was not made by '$0 start': not touching it"
    if [[ -f $dir/data/postmaster.pid ]]; then
        bindir=$(find_bindir)
        cd -- "$dir"
        if ! as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >"$dir/pg_ctl-stop.log" 2>&1; then
            cat -- "$dir/pg_ctl-stop.log" >&2
            # A stale pid file (the server died) is fine; a server still running is not.
            if as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
                die "the server of $dir did not stop; $dir left in place"
            fi
        fi
        cd /
    fi
    rm -rf -- "$dir"
}

[[ $# -eq 2 && -n $2 ]] || usage
case $1 in
start) start "$2" ;;
stop) stop "$2" ;;
*) usage ;;
esac
