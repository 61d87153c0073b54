"""README's Deploy section says what the deployment files and the gateway really do."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics
from tests.deploy import compose

README = compose.ROOT / "README.md"


@pytest.fixture(scope="module")
def deploy() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Deploy\n")
    assert start < text.index("\n## Configuration\n"), "Deploy comes before Configuration"
    return text[start : text.index("\n## ", start + 1)]


@pytest.mark.parametrize(
    "needle",
    [
        "docker compose up",
        "docker compose --profile gpu up",
        "POST localhost:8000/admin/reload",
        "kill -s HUP",
        "--watch",
        "localhost:8000/admin/experts",
        "GET /metrics",
        "config/compose.yaml",
        ".env.example",
    ],
)
def test_it_covers(deploy: str, needle: str) -> None:
    assert needle in deploy


def test_the_services_and_variables_it_names_exist(deploy: str) -> None:
    services = compose.services(compose.raw())
    documented = compose.env_example()
    for name in re.findall(r"`((?:vllm|gateway)[a-z-]*)`", deploy):
        assert name in services, name
    for variable in re.findall(r"`((?:TASKGATE|VLLM|HF)_[A-Z_]+)`", deploy):
        assert variable in documented, variable


def documented_metrics(deploy: str) -> dict[str, str]:
    """{metric family: type} from the metrics table (`_total` dropped, as families are)."""
    out = {}
    for row in re.findall(r"^\| (`taskgate_.*)$", deploy, flags=re.MULTILINE):
        cells = [cell.strip() for cell in row.split("|")]
        kind = cells[1].removesuffix("s")
        for name in re.findall(r"`(taskgate_[a-z_]+)", cells[0]):
            out[name.removesuffix("_total")] = kind
    return out


def test_the_metrics_table_matches_the_gateway(deploy: str) -> None:
    exposition = Metrics().exposition().decode()
    families = {f.name: f.type for f in text_string_to_metric_families(exposition)}
    # The text format gives unlabelled counters and histograms a `<name>_created` gauge.
    created = {f"{name}_created" for name in families}
    metrics = {name: kind for name, kind in families.items() if name not in created}
    assert documented_metrics(deploy) == metrics
