#!/bin/sh
# Installs the real servers and tools the tests start: etcd (HA coordinator),
# MariaDB and PostgreSQL (external databases), Chromium and its driver (pages in
# a real browser), promtool (from prometheus, checks /metrics and alert rules) and
# systemd-analyze (checks the systemd unit).
# Debian packages only; services are installed but not started (the tests start
# their own instances). Needs root; does nothing when all are there already.
set -eu

PACKAGES="etcd-server etcd-client mariadb-server postgresql chromium chromium-driver prometheus systemd"

missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "tests need these Debian packages:$missing (run this script as root to install them)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the packages' own services from starting: tests run their own.
policy=/usr/sbin/policy-rc.d
had_policy=0
[ -e "$policy" ] && had_policy=1
if [ "$had_policy" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
