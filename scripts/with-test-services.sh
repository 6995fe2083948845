#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL cluster and SoftHSM2 token, then tear them down.
#   with-test-services.sh CMD [ARG...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/ensure-debian-packages.sh"
dir=$(mktemp -d /tmp/member-vault-test.XXXXXX)
cleanup() { bash "$here/test-services.sh" stop "$dir" || true; rm -rf "$dir"; }
trap cleanup EXIT
bash "$here/test-services.sh" start "$dir"
set -a
# shellcheck disable=SC1091
source "$dir/env"
set +a
"$@"
