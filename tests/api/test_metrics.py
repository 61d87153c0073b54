"""`/metrics` scraped with prometheus_client's own parser while requests are made."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Served


def scrape(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = served.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def chat(served: Served, text: str, model: str = "auto") -> int:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0}
    return served.http.post("/v1/chat/completions", json=body).status_code


def test_counters_and_histograms_move_with_requests(served: Served) -> None:
    before = scrape(served)
    assert chat(served, "compute percent 42") == 200
    assert chat(served, "compute percent 42") == 200  # the cache answers this one
    assert chat(served, "percent miles") == 200  # a clarification
    assert chat(served, "x", model="broken") == 502
    after = scrape(served)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("taskgate_requests_total", expert="calculator", action="dispatch") == 2
    assert moved("taskgate_requests_total", expert="", action="clarify") == 1
    assert moved("taskgate_requests_total", expert="broken", action="dispatch") == 1
    assert moved("taskgate_cache_hits_total", kind="exact") == 1
    assert moved("taskgate_expert_errors_total", expert="broken", kind="unavailable") == 1
    assert moved("taskgate_routing_seconds_count") == 3
    assert moved("taskgate_router_score_count") == 3
    assert moved("taskgate_router_margin_count") == 3
    assert moved("taskgate_time_to_first_token_seconds_count", expert="calculator") == 1
    assert moved("taskgate_request_seconds_count", expert="calculator") == 1
