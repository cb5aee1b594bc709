#!/usr/bin/env bash
# Install the Debian packages that the integration tests need (idempotent). `make test` runs it.
#   orthanc, orthanc-dicomweb : DICOMweb archive (tests start their own Orthanc, on free ports)
#   dcmtk                     : dcmqrscp legacy DIMSE archive, storescu, echoscu
#   redis-server              : shared authorization state and rate limits across processes (tests start their own)
#   chromium                  : the browser the e2e tests drive with playwright-core
#   nginx                     : the load balancer of the multi-instance proof (tests/deploy/; its own
#                               configuration, pid and logs in a temporary folder)
#   postgresql                : audit and authorization state (tests run initdb/postgres in a temporary
#                               folder, as an unprivileged user, on a free port)
# Only missing packages are installed, and the script says which; `apt-get update` runs at most once and
# only when something must be installed. During installation a policy-rc.d (exit 101) keeps the packages'
# maintainer scripts from starting their daemons. No system service is ever stopped, disabled or
# reconfigured here: one that is already running keeps running, and the tests never use its ports
# (8042/4242, 6379, 80, 5432): each test server takes a free port of its own.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(orthanc orthanc-dicomweb dcmtk redis-server chromium nginx postgresql)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  if is_installed "$pkg"; then
    echo "install-system-deps: $pkg already installed"
  else
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-system-deps: installing ${missing[*]}"
  # policy-rc.d (exit 101) stops the packages' maintainer scripts from starting
  # their daemons (orthanc on 8042/4242, redis on 6379) during installation.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
  fi
  cleanup() { if [ "$created_policy" -eq 1 ]; then $SUDO rm -f "$policy"; fi; }
  trap cleanup EXIT
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  cleanup
  trap - EXIT
else
  echo "install-system-deps: nothing to install"
fi

for bin in Orthanc dcmqrscp storescu echoscu redis-server nginx; do
  if command -v "$bin" >/dev/null 2>&1; then
    echo "install-system-deps: $bin -> $(command -v "$bin")"
  else
    echo "install-system-deps: ERROR: $bin not found after install" >&2
    exit 1
  fi
done
plugin=$(dpkg -L orthanc-dicomweb 2>/dev/null | grep -E 'libOrthancDicomWeb\.so' | head -n1 || true)
echo "install-system-deps: DICOMweb plugin -> ${plugin:-NOT FOUND}"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  echo "install-system-deps: ERROR: PostgreSQL server binaries (initdb) not found under /usr/lib/postgresql/*/bin" >&2
  exit 1
fi
echo "install-system-deps: PostgreSQL -> $pg_bin"
echo "install-system-deps: done"
