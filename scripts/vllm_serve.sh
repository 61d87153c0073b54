#!/usr/bin/env bash
# Serve the builtin SmolLM2-135M-Instruct with the CPU build of vLLM, in the foreground.
#
#   scripts/vllm_serve.sh [PORT] [SERVED_NAME]      # defaults: 8000, smollm2
#
# Builds the vLLM venv (scripts/vllm_env.sh) and the model directory
# (`python -m experts.weights prepare`) first if needed. Ready when GET /health answers 200;
# point the integration tests at it with TASKGATE_VLLM_URL=http://127.0.0.1:PORT/v1.
#
# Environment: TASKGATE_VLLM_HOST (default 127.0.0.1), TASKGATE_PYTHON (the project's Python,
# default .venv/bin/python), VLLM_CPU_KVCACHE_SPACE (GiB of KV cache, default 1).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "${HERE}")"
PORT="${1:-8000}"
NAME="${2:-smollm2}"
PYTHON="${TASKGATE_PYTHON:-${ROOT}/.venv/bin/python}"

export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"

VENV="$("${HERE}/vllm_env.sh" | tail -n 1)"
MODEL_DIR="$(cd "${ROOT}" && "${PYTHON}" -m experts.weights prepare | tail -n 1)"

exec "${VENV}/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "${MODEL_DIR}" \
    --served-model-name "${NAME}" \
    --host "${TASKGATE_VLLM_HOST:-127.0.0.1}" \
    --port "${PORT}" \
    --max-model-len 2048 \
    --enable-auto-tool-choice --tool-call-parser pythonic
