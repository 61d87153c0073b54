#!/usr/bin/env bash
# The browser the console's end-to-end tests drive: Debian's chromium and chromium-driver,
# installed with apt when missing (as root; otherwise through sudo -n). A second run only
# checks and returns.
#
#   bash scripts/browser_env.sh
set -euo pipefail

log() { printf '[browser_env] %s\n' "$*" >&2; }

# shellcheck source=scripts/apt.sh
source "$(dirname "$0")/apt.sh"

have_browser() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

if have_browser; then
    exit 0
fi
log "installing chromium and chromium-driver with apt"
apt_install chromium chromium-driver
have_browser || { log "chromium or chromedriver still missing"; exit 1; }
