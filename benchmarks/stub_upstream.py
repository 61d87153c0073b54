"""A dependency-free OpenAI-compatible upstream that answers instantly, for overhead benchmarks.

    python3 benchmarks/stub_upstream.py --port 9100

`POST /v1/chat/completions` answers a fixed completion; with `"stream": true` it sends the
same answer as 20 SSE chunks (one write each) and `data: [DONE]`. `GET /v1/models` lists the
one model, `stub`. HTTP/1.1 with keep-alive, standard library only (asyncio protocols,
responses prebuilt), so that it costs the load generator's core as little as possible.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

MODEL = "stub"
CHUNKS = 20
WORDS = [f"word{i} " for i in range(CHUNKS)]


# The experts a gateway benchmarked in front of this stub registers (YAML, `{stub_port}`
# to fill in): the stub, and a calculator so that routing has a choice to make.
GATEWAY_EXPERTS = """\
experts:
  - name: stub
    kind: openai
    base_url: http://127.0.0.1:{stub_port}/v1
    model: stub
    description: general conversation, facts, writing and explanations
    examples: [tell me a joke, write a haiku about autumn, what is the capital of France,
               tell me a fun fact about animals, explain how rainbows form]
  - name: calculator
    kind: tool
    tool: calculator
    description: arithmetic with numbers
    examples: [what is 15% of 80, compute 3.5 * (12 - 4), what is 2 to the power of 10]
"""


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def _completion() -> bytes:
    body = {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(WORDS)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS},
    }
    return _response("200 OK", json.dumps(body).encode())


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _stream_parts() -> list[bytes]:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
    )
    created = int(time.time())
    parts = [head]
    for i, word in enumerate(WORDS):
        delta: dict[str, str] = {"content": word}
        if i == 0:
            delta["role"] = "assistant"
        event = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": "stop" if i == CHUNKS - 1 else None}
            ],
        }
        parts.append(_chunk(b"data: " + json.dumps(event).encode() + b"\n\n"))
    parts.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return parts


COMPLETION = _completion()
STREAM = _stream_parts()
MODELS = _response(
    "200 OK", json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
)
NOT_FOUND = _response("404 Not Found", b'{"error": {"message": "not found"}}')


class StubProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.answer(head.split(" ", 2), body)

    def answer(self, request_line: list[str], body: bytes) -> None:
        assert self.transport is not None
        method, path = request_line[0], request_line[1] if len(request_line) > 1 else ""
        if method == "GET" and path.endswith("/models"):
            self.transport.write(MODELS)
        elif method == "POST" and path.endswith("/chat/completions"):
            if b'"stream":true' in body.replace(b" ", b""):
                for part in STREAM:
                    self.transport.write(part)
            else:
                self.transport.write(COMPLETION)
        else:
            self.transport.write(NOT_FOUND)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubProtocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="an instant OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
