"""`taskgate eval` on a tiny generated data set, through the CLI's main()."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from gateway.cli import main

KEYS = {"in_scope_accuracy", "oos_recall", "oos_precision", "clarify_rate", "macro_f1",
        "latency_ms", "fit_seconds", "n_test"}  # fmt: skip
TEMPLATES = {
    "weather": ["will it rain in {}", "what's the forecast for {}", "is it sunny in {} today",
                "how cold is it in {}", "do I need an umbrella in {}", "weather in {} tomorrow"],
    "flights": ["book a flight to {}", "find me a plane ticket to {}", "next flight to {}",
                "cheapest flights to {}", "I want to fly to {}", "check my flight to {}"],
    "recipes": ["how do I cook {}", "give me a recipe for {}", "what can I make with {}",
                "how long do I bake {}", "ingredients for {}", "easy dinner with {}"],
    "music": ["play some {}", "put on {} music", "I want to hear {}", "shuffle my {} playlist",
              "next {} song please", "turn up the {}"],
}  # fmt: skip
FILLERS = {
    "weather": ["paris", "berlin", "tokyo", "lima", "oslo", "cairo", "rome", "quito"],
    "flights": ["paris", "berlin", "tokyo", "lima", "oslo", "cairo", "rome", "quito"],
    "recipes": ["chicken", "rice", "pasta", "tofu", "salmon", "lentils", "eggs", "potatoes"],
    "music": ["jazz", "rock", "reggae", "techno", "blues", "folk", "opera", "disco"],
}
OUT_OF_SCOPE = [
    "what is the meaning of life", "who won the football game", "tell me about quantum physics",
    "how do I fix my bike chain", "what's the capital of peru", "write a poem about cats",
    "how tall is mount everest", "explain the stock market", "who painted the mona lisa",
    "what time is it in sydney", "how many legs does a spider have", "recommend a good book",
    "how do vaccines work", "translate hello into french", "what is my credit score",
    "how far is the moon",
]  # fmt: skip


def write(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = random.Random(0)
    rows = {label: [(t.format(f), label) for t in TEMPLATES[label] for f in FILLERS[label]]
            for label in TEMPLATES}  # fmt: skip
    train, val, test = [], [], []
    for items in rows.values():
        rng.shuffle(items)
        train += items[:28]
        val += items[28:38]
        test += items[38:48]
    oos = [(text, "oos") for text in OUT_OF_SCOPE]
    train, val, test = train + oos[:6], val + oos[6:11], test + oos[11:]
    folder = tmp_path_factory.mktemp("data")
    return {name: write(folder / f"{name}.jsonl", part)
            for name, part in (("train", train), ("val", val), ("test", test))}  # fmt: skip


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(args)
    return code, capsys.readouterr().out.strip().splitlines()


def test_eval_prints_a_table_and_ends_with_the_json_metrics(
    dataset: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TASKGATE_HOME", str(tmp_path))
    args = ["eval", "--train", str(dataset["train"]), "--test", str(dataset["test"]),
            "--val", str(dataset["val"]), "--json"]  # fmt: skip
    code, lines = run(args, capsys)
    assert code == 0
    assert any(line.startswith("| in-scope accuracy") for line in lines)
    metrics = json.loads(lines[-1])
    assert set(metrics) >= KEYS
    assert metrics["n_test"] == 45
    for key in ("in_scope_accuracy", "oos_recall", "oos_precision", "clarify_rate", "macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["in_scope_accuracy"] >= 0.8  # four easy, distinct intents
    # Without a threshold every in-scope item is dispatched: at least as accurate.
    assert metrics["top1_accuracy"] >= metrics["in_scope_accuracy"]
    reference = metrics["accuracy_at_oos_recall_0.9"]
    assert 0.0 <= reference <= metrics["top1_accuracy"]
    assert set(metrics["latency_ms"]) == {"p50", "p99"}
    assert metrics["latency_ms"]["p99"] >= metrics["latency_ms"]["p50"] > 0
    assert metrics["head"] is True and metrics["fit_cached"] is False
    assert metrics["fit_seconds"] > 0
    # The same inputs again: the fit comes from the cache under TASKGATE_HOME.
    code, lines = run(args, capsys)
    again = json.loads(lines[-1])
    assert code == 0 and again["fit_cached"] is True
    assert again["fit_seconds"] == metrics["fit_seconds"]
    assert again["threshold"] == metrics["threshold"]


def test_eval_without_val_calibrates_on_folds_and_plots(
    dataset: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("TASKGATE_HOME", str(tmp_path))
    plot = tmp_path / "eval.png"
    args = ["eval", "--train", str(dataset["train"]), "--test", str(dataset["test"]),
            "--target", "oos_recall=0.8", "--json", "--plot", str(plot)]  # fmt: skip
    code, lines = run(args, capsys)
    assert code == 0
    metrics = json.loads(lines[-1])
    assert metrics["target"] == "oos_recall=0.8"
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert any("calibrated on folds" in line for line in lines)


def test_eval_names_a_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": 3}\n')
    assert main(["eval", "--train", str(bad), "--test", str(bad)]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err
