#!/usr/bin/env bash
# The browser the console's end-to-end tests drive: Debian's chromium and chromium-driver,
# installed with apt when missing (as root; otherwise through sudo -n). A second run only
# checks and returns.
#
#   bash scripts/browser_env.sh
set -euo pipefail

log() { printf '[browser_env] %s\n' "$*" >&2; }

as_root() {
    if [[ "$(id -u)" == "0" ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root for: $*"
        return 1
    fi
}

have_browser() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

if have_browser; then
    exit 0
fi
log "installing chromium and chromium-driver with apt"
export DEBIAN_FRONTEND=noninteractive
packages=(chromium chromium-driver)
if ! as_root apt-get install -y --no-install-recommends "${packages[@]}" >&2; then
    as_root apt-get update >&2
    as_root apt-get install -y --no-install-recommends "${packages[@]}" >&2
fi
have_browser || { log "chromium or chromedriver still missing"; exit 1; }
