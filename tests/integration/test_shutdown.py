"""Graceful shutdown: SIGTERM lets the answers in flight finish before the process exits."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.integration


def test_sigterm_drains_a_stream_in_flight() -> None:
    gateway = GatewayProcess()  # the embedded default, with the local chat model
    gateway.start()
    try:
        assert gateway.handle is not None
        process = gateway.handle.process
        body = {
            "model": "general",
            "stream": True,
            "max_tokens": 48,
            "messages": [{"role": "user", "content": "tell me a long story about a dragon"}],
        }
        events: list[str] = []
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line.removeprefix("data: "))
                if len(events) == 3:  # the answer has started: stop the gateway now
                    process.send_signal(signal.SIGTERM)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert not any("error" in chunk for chunk in chunks)
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finish[-1] in ("stop", "length")
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{gateway.url}/healthz", timeout=5)
    finally:
        gateway.stop()
