"""What the gateway remembers of recent activity for operators: bounded, per process."""

from __future__ import annotations

from gateway.activity import Activity, LoggedRequest


def logged(text: str) -> LoggedRequest:
    return LoggedRequest(f"id-{text}", 0.0, text, "dispatch", "calculator", 0.9, "match")


def test_latency_percentiles_cover_the_recent_window_only() -> None:
    activity = Activity(latency_window=3)
    assert activity.expert("calculator").latency_p50_ms is None
    for seconds in (10.0, 0.001, 0.002, 0.003):  # the 10 s answer falls out of the window
        activity.answered("calculator", seconds)
    seen = activity.expert("calculator")
    assert (seen.latency_p50_ms, seen.recent) == (2.0, 3)
    assert seen.latency_p95_ms is not None and 2.0 < seen.latency_p95_ms <= 3.0


def test_requests_are_counted_per_expert() -> None:
    activity = Activity()
    for expert in ("units", "units", "calculator"):
        activity.routed(expert)
    assert (activity.expert("units").requests, activity.expert("calculator").requests) == (2, 1)
    assert activity.expert("nobody").requests == 0


def test_cache_hit_rate() -> None:
    activity = Activity()
    assert activity.cache().hit_rate is None
    for hit in ("exact", None, "semantic", None):
        activity.cache_lookup(hit)
    cache = activity.cache()
    assert (cache.lookups, cache.exact, cache.semantic, cache.hit_rate) == (4, 1, 1, 0.5)


def test_the_request_log_is_per_tenant_newest_first_and_bounded() -> None:
    activity = Activity(log_per_tenant=2, max_tenants=2)
    for text in ("a", "b", "c"):
        activity.log("acme", logged(text))
    activity.log("globex", logged("g"))
    assert [r.text for r in activity.recent_requests("acme", 10)] == ["c", "b"]
    assert [r.text for r in activity.recent_requests("acme", 1)] == ["c"]
    activity.log("acme", logged("d"))  # acme is now the most recent tenant
    activity.log("initech", logged("i"))  # a third tenant pushes out the one seen longest ago
    assert activity.recent_requests("globex", 10) == []
    assert [r.text for r in activity.recent_requests("acme", 10)] == ["d", "c"]
    assert [r.text for r in activity.recent_requests("initech", 10)] == ["i"]
