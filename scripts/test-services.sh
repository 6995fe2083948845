#!/usr/bin/env bash
# Throwaway PostgreSQL 15 cluster + SoftHSM2 token for the real-service tests.
#   test-services.sh start DIR   DIR: a temp dir chosen by the caller; writes DIR/env
#   test-services.sh stop DIR    stops the cluster (safe to repeat); the caller removes DIR
# Needs root (initdb runs as the `postgres` OS user via runuser); see ensure-debian-packages.sh.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
TOKEN_LABEL=member-vault-test

fail() { echo "test-services: $*" >&2; exit 1; }
[ $# -eq 2 ] && { [ "$1" = start ] || [ "$1" = stop ]; } || fail "usage: $0 start|stop DIR"
DIR=$(realpath -m -- "$2")
DATA=$DIR/pgdata SOCK=$DIR/pgsock PGLOG=$DIR/postgres.log SETUP_LOG=$DIR/setup.log
cd /  # runuser keeps the cwd, which `postgres` may not be able to read

as_pg() { runuser -u postgres -- "$@"; }

stop_pg() {
    if [ -f "$DATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w -s
    fi
}

if [ "$1" = stop ]; then
    stop_pg || fail "pg_ctl stop failed for $DATA"
    exit 0
fi

# ---- start: preconditions (nothing started yet, so plain fail) ----
[ -x "$PG_BIN/initdb" ] || fail "$PG_BIN/initdb missing; run scripts/ensure-debian-packages.sh"
[ -f "$PKCS11_MODULE" ] && command -v softhsm2-util >/dev/null || fail "softhsm2 missing; run scripts/ensure-debian-packages.sh"
[ "$(id -u)" -eq 0 ] || fail "must run as root"
id postgres >/dev/null 2>&1 || fail "no 'postgres' OS user (is the postgresql package installed?)"
case $DIR in *"'"* | *[[:space:]\\]*) fail "DIR must not contain quotes, backslashes or whitespace: $DIR" ;; esac
[ ${#SOCK} -le 90 ] || fail "DIR path too long for a unix socket: $DIR"
[ ! -e "$DATA" ] || fail "$DATA already exists (already started? use a fresh DIR)"

mkdir -p "$DIR"
chmod 0755 "$DIR"  # `postgres` must traverse DIR (mktemp -d makes it 0700)
: >"$SETUP_LOG"

step=setup
abort() {
    trap - ERR
    echo "test-services: start failed during '$step' (see $SETUP_LOG and $PGLOG)" >&2
    stop_pg >/dev/null 2>&1 || true
    exit 1
}
trap abort ERR

# One python3 call: a free port (bound to port 0, then released) and four secrets.
step="pick port and secrets"
read -r PORT OWNER_PW APP_PW SO_PIN USER_PIN <<<"$(python3 -c '
import secrets, socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
print(port, *(secrets.token_urlsafe(24) for _ in range(4)))')"
[ -n "$USER_PIN" ]

# ---- PostgreSQL ----
step=initdb
mkdir -m 0700 "$DATA"
mkdir -m 0755 "$SOCK"
: >"$PGLOG"
chown postgres: "$DATA" "$SOCK" "$PGLOG"
# --no-sync only skips initdb's final flush of a throwaway cluster; the server runs with fsync=on.
as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C --no-sync >>"$SETUP_LOG" 2>&1
cat >"$DATA/pg_hba.conf" <<EOF
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
EOF
cat >>"$DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
fsync = on
EOF

step="pg_ctl start"
as_pg "$PG_BIN/pg_ctl" start -D "$DATA" -l "$PGLOG" -w -s >>"$SETUP_LOG" 2>&1

step="create roles and databases"
db_setup() {  # per-database schema privileges
    cat <<EOF
\\connect $1
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO vault_owner;
GRANT USAGE ON SCHEMA public TO vault_app;
ALTER DEFAULT PRIVILEGES FOR ROLE vault_owner IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO vault_app;
ALTER DEFAULT PRIVILEGES FOR ROLE vault_owner IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO vault_app;
EOF
}
# SQL goes in on stdin so the passwords never appear in a process listing.
{
    cat <<EOF
CREATE ROLE vault_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '$OWNER_PW';
CREATE ROLE vault_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '$APP_PW';
CREATE DATABASE vault OWNER vault_owner;
CREATE DATABASE vault_keys OWNER vault_owner;
REVOKE ALL ON DATABASE vault FROM PUBLIC;
REVOKE ALL ON DATABASE vault_keys FROM PUBLIC;
GRANT CONNECT ON DATABASE vault TO vault_app;
GRANT CONNECT ON DATABASE vault_keys TO vault_app;
EOF
    db_setup vault
    db_setup vault_keys
} | "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres >>"$SETUP_LOG" 2>&1

# ---- SoftHSM2 ----
step="softhsm2 token"
mkdir -m 0700 "$DIR/tokens"
cat >"$DIR/softhsm2.conf" <<EOF
directories.tokendir = $DIR/tokens
objectstore.backend = file
log.level = ERROR
EOF
SOFTHSM2_CONF=$DIR/softhsm2.conf softhsm2-util --init-token --free --label "$TOKEN_LABEL" \
    --so-pin "$SO_PIN" --pin "$USER_PIN" >>"$SETUP_LOG" 2>&1
(umask 077 && printf '%s' "$USER_PIN" >"$DIR/hsm-pin")

# ---- DIR/env: written last, so its presence means start succeeded ----
step="write env"
(
    umask 077
    tcp="127.0.0.1:$PORT"
    env_line() { printf "export %s='%s'\n" "$1" "$2"; }
    {
        env_line VAULT_TEST_PG_URL "postgresql+psycopg://vault_app:$APP_PW@$tcp/vault"
        env_line VAULT_TEST_PG_MIGRATION_URL "postgresql+psycopg://vault_owner:$OWNER_PW@$tcp/vault"
        env_line VAULT_TEST_PG_KEYS_URL "postgresql+psycopg://vault_app:$APP_PW@$tcp/vault_keys"
        env_line VAULT_TEST_PG_KEYS_MIGRATION_URL "postgresql+psycopg://vault_owner:$OWNER_PW@$tcp/vault_keys"
        env_line VAULT_TEST_PG_ADMIN_URL "postgresql+psycopg://postgres@/vault?host=$SOCK&port=$PORT"
        env_line VAULT_TEST_PG_BIN "$PG_BIN"
        env_line VAULT_TEST_PG_DATA "$DATA"
        env_line SOFTHSM2_CONF "$DIR/softhsm2.conf"
        env_line VAULT_TEST_PKCS11_MODULE "$PKCS11_MODULE"
        env_line VAULT_TEST_PKCS11_TOKEN_LABEL "$TOKEN_LABEL"
        env_line VAULT_TEST_PKCS11_PIN_FILE "$DIR/hsm-pin"
    } >"$DIR/env.tmp"
    mv "$DIR/env.tmp" "$DIR/env"
)
