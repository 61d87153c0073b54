"""Through the HTTP API: the route object carries the head's calibrated probabilities, and
a rebuild with new exemplars changes decisions while every concurrent request succeeds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread
import httpx
import pytest

from experts.registry import ExpertSet
from gateway.api.app import build_app
from gateway.config import Config, parse_config
from gateway.routing.embedder import Vectors
from gateway.service import Gateway
from tests.api.conftest import local_memory, wait_ready
from tests.fakes import KeywordEmbedder, ScriptedExpert
from tests.support.asgi import serve

CONFIG = """
router:
  use_descriptions: false
  head: {{mode: on, threshold: 0.8}}
auth: none
experts:
  - {{name: weather, kind: tool, tool: calculator, description: the weather,
     examples: [rain, sun, rain sun, sun rain rain, cloud, cloud rain, sun cloud{weather}]}}
  - {{name: music, kind: tool, tool: calculator, description: music,
     examples: [song, guitar, song guitar, drum, drum song, guitar drum{music}]}}
"""
KEYWORDS = ["rain", "sun", "cloud", "song", "guitar", "drum", "play"]
PLAY = ", play, play play, play {}"


def config(play_goes_to: str) -> Config:
    """Requests to "play" are examples of `play_goes_to`."""
    weather = PLAY.format("sun") if play_goes_to == "weather" else ""
    music = PLAY.format("song") if play_goes_to == "music" else ""
    return parse_config(CONFIG.format(weather=weather, music=music), "rebuild.yaml", {})


class GatedEmbedder(KeywordEmbedder):
    """Embeds many texts at once (a router build) only while its gate is open."""

    def __init__(self, keywords: Sequence[str]) -> None:
        super().__init__(keywords)
        self.gate = threading.Event()
        self.gate.set()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await super().start()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if len(texts) > 1:
            await anyio.to_thread.run_sync(self.gate.wait)
        return await super().embed(texts)


class Served:
    def __init__(self, url: str, gateway: Gateway, embedder: GatedEmbedder) -> None:
        self.url = url
        self.gateway = gateway
        self.embedder = embedder

    def route(self, text: str) -> dict[str, object]:
        response = httpx.post(f"{self.url}/v1/route", json={"input": text}, timeout=10)
        assert response.status_code == 200, response.text
        route: dict[str, object] = response.json()["route"]
        return route


@pytest.fixture
def served() -> Iterator[Served]:
    embedder = GatedEmbedder(KEYWORDS)
    experts = [ScriptedExpert("weather", ["sunny"]), ScriptedExpert("music", ["la la"])]
    answers = {"weather": ["sunny"], "music": ["la la"]}
    gateway = Gateway(
        config("weather"), embedder, ExpertSet(experts), local_memory(),
        make_expert=lambda spec: ScriptedExpert(spec.name, answers[spec.name]),
    )  # fmt: skip
    with serve(build_app(gateway, 1 << 20)) as url:
        wait_ready(url)
        yield Served(url, gateway, embedder)


def test_route_scores_are_calibrated_probabilities(served: Served) -> None:
    route = served.route("rain and sun")
    assert (route["action"], route["expert"]) == ("dispatch", "weather")
    candidates = route["candidates"]
    assert isinstance(candidates, list)
    scores = [c["score"] for c in candidates]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert route["score"] == scores[0] >= 0.8
    # The rest of the probability is "none": in_scope is the probability some expert fits.
    in_scope = route["in_scope"]
    assert isinstance(in_scope, float) and scores[0] <= in_scope <= 1.0
    assert sum(scores) == pytest.approx(in_scope, abs=1e-5)
    # The margin is the best expert's lead in shares of in_scope.
    assert route["margin"] == pytest.approx((scores[0] - scores[1]) / in_scope, abs=1e-4)


def test_rebuild_with_new_exemplars_changes_decisions_without_dropping_requests(
    served: Served,
) -> None:
    assert served.route("play")["expert"] == "weather"
    assert served.embedder.loop is not None
    served.embedder.gate.clear()  # the rebuild waits here, half-way
    rebuild = asyncio.run_coroutine_threadsafe(
        served.gateway.reload(config("music")), served.embedder.loop
    )

    def chat(i: int) -> str:
        text = ["play", "rain", "song guitar", "sun cloud"][i % 4]
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        response = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return str(response.json()["model"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        during = list(pool.map(chat, range(40)))
        assert not rebuild.done()
        served.embedder.gate.set()
        after_release = list(pool.map(chat, range(40)))
    rebuild.result(timeout=30)
    assert len(during) == len(after_release) == 40
    # The old router answered while the new one was being built.
    assert during[0::4] == ["weather"] * 10
    assert during[2::4] == ["music"] * 10
    route = served.route("play")
    assert (route["action"], route["expert"]) == ("dispatch", "music")
    assert route["score"] >= 0.8
    assert served.route("rain")["expert"] == "weather"
