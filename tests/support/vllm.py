"""A real vLLM server (CPU build) for integration tests.

`vllm_server_session()` yields a `VLLMServer`: either the one named by `TASKGATE_VLLM_URL`
(model name from `TASKGATE_VLLM_MODEL`, default "smollm2"), or one it starts itself:

1. `scripts/vllm_env.sh` builds (once, cached outside the clone) the vLLM virtualenv;
2. `python -m experts.weights prepare` gives the converted SmolLM2-135M-Instruct directory;
3. vLLM's OpenAI server starts on a free loopback port and is stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import free_port, start_process

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_NAME = "smollm2"
VENV_BUILD_TIMEOUT_S = 1800.0
PREPARE_TIMEOUT_S = 1800.0
READY_TIMEOUT_S = 300.0
MAX_MODEL_LEN = 2048
# vLLM 0.32 builds its tool parser only with auto tool choice on, and without one it
# rejects every `tool_choice` but "none" (named and "required" included, although guided
# decoding alone makes those calls). "pythonic" needs no special tokens, so SmolLM2 can use
# it, and text that does not start with "[" passes through it unchanged.
TOOL_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "pythonic")


@dataclass(frozen=True)
class VLLMServer:
    base_url: str  # the OpenAI base URL, ending in /v1
    model: str  # the served model name


def _last_line(cmd: list[str], timeout: float, what: str) -> str:
    """Run a setup command; its last stdout line is the answer. Fails with its output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run(
            cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what} did not finish in {timeout:.0f}s: {cmd}") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise RuntimeError(f"{what} failed ({done.returncode}): {cmd}\n{tail}")
    return lines[-1].strip()


def build_venv() -> Path:
    script = REPO_ROOT / "scripts" / "vllm_env.sh"
    return Path(_last_line(["bash", str(script)], VENV_BUILD_TIMEOUT_S, "vllm_env.sh"))


def prepare_model() -> Path:
    cmd = [sys.executable, "-m", "experts.weights", "prepare"]
    return Path(_last_line(cmd, PREPARE_TIMEOUT_S, "experts.weights prepare"))


def _openai_base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


@contextmanager
def vllm_server_session(model_name: str = DEFAULT_MODEL_NAME) -> Iterator[VLLMServer]:
    external = os.environ.get("TASKGATE_VLLM_URL")
    if external:
        yield VLLMServer(
            base_url=_openai_base(external),
            model=os.environ.get("TASKGATE_VLLM_MODEL", DEFAULT_MODEL_NAME),
        )
        return
    venv = build_venv()
    model_dir = prepare_model()
    port = free_port()
    cmd = [
        str(venv / "bin" / "python"),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        *TOOL_ARGS,
    ]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    handle = start_process(
        cmd,
        env=env,
        ready_url=f"http://127.0.0.1:{port}/health",
        timeout=READY_TIMEOUT_S,
        name="vllm",
    )
    try:
        yield VLLMServer(base_url=f"http://127.0.0.1:{port}/v1", model=model_name)
    finally:
        handle.stop()
