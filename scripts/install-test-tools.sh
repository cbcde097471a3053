#!/usr/bin/env bash
# Debian packages the suite drives for real: Chromium (admin in a browser) and Prometheus
# Alertmanager (a real alert sender). Installed when missing and we may; otherwise those tests
# skip and say why.
set -u
wanted=()
[ -x /usr/bin/chromium ] || wanted+=(chromium)
command -v prometheus-alertmanager >/dev/null 2>&1 || wanted+=(prometheus-alertmanager)
[ ${#wanted[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-tools: cannot install ${wanted[*]} (needs root and apt-get); the tests that use them will skip."
  exit 0
fi
echo "install-test-tools: installing ${wanted[*]} from Debian"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null 2>&1 ||
  echo "install-test-tools: apt-get install ${wanted[*]} failed; the tests that use them will skip."
# Debian starts the Alertmanager service on install; the tests run their own on free ports.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus-alertmanager >/dev/null 2>&1 || true; fi
pkill -x prometheus-alert >/dev/null 2>&1 || true
exit 0
