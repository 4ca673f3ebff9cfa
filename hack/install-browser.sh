#!/usr/bin/env bash
# Install the headless browser the dashboard's browser test drives: Chromium, Debian's package.
#
# Idempotent: does nothing when `chromium` (or `chromium-browser`) is already on PATH. Debian
# packages by name only; without apt-get or root it fails with a clear message.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: chromium is missing and there is no apt-get to install it" >&2
  exit 1
fi
if [ "$(id -u)" != "0" ]; then
  echo "install-browser: chromium is missing; installing it needs root (apt-get install -y chromium)" >&2
  exit 1
fi
echo "install-browser: installing chromium" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || {
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
}
