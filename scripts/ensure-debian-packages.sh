#!/usr/bin/env bash
# Install the Debian packages the real-service tests need, only if missing.
# Idempotent and non-interactive (CI has no stdin). Must run as root.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
missing=()
[ -x "$PG_BIN/initdb" ] || missing+=(postgresql)
if [ ! -f /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null 2>&1; then
    missing+=(softhsm2)
fi
[ "${#missing[@]}" -eq 0 ] && exit 0

fail() { echo "ensure-debian-packages: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root to install: ${missing[*]}"

echo "ensure-debian-packages: installing ${missing[*]}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt_fail() { tail -n 20 "$log" >&2; fail "$1 failed (output above)"; }
apt-get update -q </dev/null >"$log" 2>&1 || apt_fail "apt-get update"
apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null >"$log" 2>&1 || apt_fail "apt-get install ${missing[*]}"

# Re-check: a package that installed but does not provide what we need is a failure too.
[ -x "$PG_BIN/initdb" ] || fail "postgresql installed but $PG_BIN/initdb is missing"
[ -f /usr/lib/softhsm/libsofthsm2.so ] || fail "softhsm2 installed but /usr/lib/softhsm/libsofthsm2.so is missing"
command -v softhsm2-util >/dev/null 2>&1 || fail "softhsm2 installed but softhsm2-util is not on PATH"
