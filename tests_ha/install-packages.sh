#!/bin/sh
# make test-ha: Debian's postgresql-15 and pgbouncer, installed when missing and we are
# root (CI); otherwise the tests say what is missing and skip.
set -eu
for package in postgresql-15 pgbouncer; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing="${missing:-} $package"
done
[ -n "${missing:-}" ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "make test-ha: missing$missing (apt-get install$missing, as root); the tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $missing </dev/null
