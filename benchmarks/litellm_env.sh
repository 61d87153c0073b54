#!/usr/bin/env bash
# Build (once) the virtualenv with the LiteLLM proxy that benchmarks/overhead.py compares
# taskgate with; prints the venv path as the last line of stdout.
#
# The venv lives in ${TASKGATE_HOME:-$HOME/.cache/taskgate}/litellm-venv-<version>; a second
# run finds it complete (marker file + a working `import litellm.proxy.proxy_server`). It is
# built under a lock and the marker is written last, so a half-built venv is rebuilt.
# 1.108.5: the newest 1.108 release whose `proxy` extra resolves from PyPI alone.
set -euo pipefail

LITELLM_VERSION="${TASKGATE_LITELLM_VERSION:-1.108.5}"
CACHE_ROOT="${TASKGATE_HOME:-$HOME/.cache/taskgate}"
VENV="${CACHE_ROOT}/litellm-venv-${LITELLM_VERSION}"
MARKER="${VENV}/.taskgate-complete"

log() { printf '[litellm_env] %s\n' "$*" >&2; }

is_complete() {
    [[ -f "$1/.taskgate-complete" ]] && "$1/bin/python" -c "import litellm.proxy.proxy_server" >/dev/null 2>&1
}

mkdir -p "${CACHE_ROOT}"
exec 9>"${VENV}.lock"
flock 9
if ! is_complete "${VENV}"; then
    log "building ${VENV} (litellm[proxy]==${LITELLM_VERSION}); this takes a few minutes"
    rm -rf "${VENV}"
    python3 -m venv "${VENV}"
    "${VENV}/bin/pip" install --quiet --disable-pip-version-check \
        "litellm[proxy]==${LITELLM_VERSION}" >&2
    echo "litellm[proxy]==${LITELLM_VERSION}" >"${MARKER}"
    is_complete "${VENV}" || { log "litellm does not import in ${VENV}"; exit 1; }
fi
echo "${VENV}"
