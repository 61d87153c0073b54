#!/usr/bin/env bash
# The whole test suite: lint, types, and every test (unit, API, integration with a real
# vLLM server and real Redis servers, the console in headless Chromium). Installs what it
# needs first (Redis and Chromium with apt); the vLLM virtualenv and Redis Stack are built
# once into the cache (${TASKGATE_HOME:-~/.cache/taskgate}) and reused afterwards.
#
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "[test] preparing Redis (apt) and Redis Stack (cached)" >&2
bash scripts/redis_env.sh >/dev/null
echo "[test] preparing Chromium for the console's browser tests (apt)" >&2
bash scripts/browser_env.sh
echo "[test] preparing the vLLM server environment" >&2
bash scripts/vllm_env.sh >/dev/null

echo "[test] ruff" >&2
.venv/bin/ruff check .
echo "[test] mypy --strict" >&2
.venv/bin/mypy
echo "[test] pytest" >&2
.venv/bin/pytest "$@"
