#!/usr/bin/env bash
# Install the Debian packages that the integration tests need (idempotent).
#   orthanc, orthanc-dicomweb : DICOMweb archive (tests start their own Orthanc)
#   dcmtk                     : dcmqrscp legacy DIMSE archive, storescu, echoscu
#   redis-server              : shared authorization state and rate limits across processes (tests start their own)
#   chromium                  : the browser the e2e tests drive with playwright-core
# Only missing packages are installed; `apt-get update` runs at most once and only
# when something must be installed. A system Orthanc daemon started by the
# package is stopped and disabled so that it does not hold ports 8042/4242.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(orthanc orthanc-dicomweb dcmtk redis-server chromium)

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

# Make sure no system Orthanc daemon occupies the default ports (tests start their own).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] \
    && systemctl is-active --quiet orthanc 2>/dev/null; then
  echo "install-system-deps: stopping the system orthanc service"
  $SUDO systemctl stop orthanc || true
elif [ -x /etc/init.d/orthanc ] && /etc/init.d/orthanc status >/dev/null 2>&1; then
  echo "install-system-deps: stopping the system orthanc daemon (init.d)"
  $SUDO /etc/init.d/orthanc stop || true
fi
if compgen -G "/etc/rc[2-5].d/S*orthanc" >/dev/null \
    || [ -e /etc/systemd/system/multi-user.target.wants/orthanc.service ]; then
  echo "install-system-deps: disabling autostart of the system orthanc service"
  if command -v update-rc.d >/dev/null 2>&1 && [ -e /etc/init.d/orthanc ]; then
    $SUDO update-rc.d orthanc disable >/dev/null 2>&1 || true
  fi
  if command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable orthanc >/dev/null 2>&1 || true
  fi
fi

for bin in Orthanc dcmqrscp storescu echoscu redis-server; do
  if command -v "$bin" >/dev/null 2>&1; then
    echo "install-system-deps: $bin -> $(command -v "$bin")"
  else
    echo "install-system-deps: ERROR: $bin not found after install" >&2
    exit 1
  fi
done
plugin=$(dpkg -L orthanc-dicomweb 2>/dev/null | grep -E 'libOrthancDicomWeb\.so' | head -n1 || true)
echo "install-system-deps: DICOMweb plugin -> ${plugin:-NOT FOUND}"
echo "install-system-deps: done"
