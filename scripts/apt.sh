# Sourced by the setup scripts: run as root (directly, or through sudo -n), and install
# Debian packages with apt (refreshing the package lists only when the first try fails).
# The sourcing script defines `log`.

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

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y --no-install-recommends "$@" >&2; then
        as_root apt-get update >&2
        as_root apt-get install -y --no-install-recommends "$@" >&2
    fi
}
