"""`taskgate eval` for the admin API (`POST /admin/eval`): the same evaluation, on JSONL
texts sent in the request, with the gateway's router and embedder settings.

Evaluations run one at a time (another while one runs is a 429) in a worker thread with
an event loop of their own: loading the embedder, fitting and routing every test text
never block the serving loop. The row counts are bounded; the body size already is.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio.to_thread

from gateway.config import Config
from gateway.errors import EvaluationRunning, InvalidRequest
from gateway.eval_report import result_json
from gateway.evaluation import DatasetError, EvalResult, Labelled, evaluate, parse_jsonl

MAX_ROWS = 5000
Rows = Sequence[Labelled]
# (config, train, test, validation, cache dir) -> result, called in a worker thread.
EvalFunction = Callable[[Config, Rows, Rows, Rows | None, Path], EvalResult]


def gateway_eval(
    config: Config, train: Rows, test: Rows, validation: Rows | None, cache_dir: Path
) -> EvalResult:
    """`taskgate eval --config` on these rows, in an event loop of its own."""
    job = evaluate(
        train,
        test,
        validation,
        embedder_ref=config.embedder.model,
        router_config=config.router,
        embedder_config=config.embedder,
        cache_dir=cache_dir,
    )
    return asyncio.run(job)


class Evaluations:
    def __init__(
        self,
        cache_dir: Path | None,
        *,
        max_rows: int = MAX_ROWS,
        run: EvalFunction = gateway_eval,
    ) -> None:
        self._cache_dir = cache_dir
        self._max_rows = max_rows
        self._run = run
        self._lock = asyncio.Lock()

    async def run(
        self, config: Config, train: str, test: str, validation: str | None = None
    ) -> dict[str, object]:
        """Evaluate routing trained on `train`, tested on `test` (JSONL texts); the metrics,
        the most confused routes and the threshold curve."""
        if self._lock.locked():
            raise EvaluationRunning("an evaluation is running; try again when it has finished")
        async with self._lock:
            rows = self._parse("train", train), self._parse("test", test)
            val = self._parse("validation", validation) if validation is not None else None
            result = await anyio.to_thread.run_sync(self._evaluate, config, *rows, val)
        return result_json(result)

    def _parse(self, name: str, text: str) -> list[Labelled]:
        try:
            rows = parse_jsonl(text, name)
        except DatasetError as exc:
            raise InvalidRequest(str(exc), param=name, code="invalid_dataset") from exc
        if len(rows) > self._max_rows:
            raise InvalidRequest(
                f"{name}: {len(rows)} rows; at most {self._max_rows} (use `taskgate eval`)",
                param=name,
                code="invalid_dataset",
            )
        return rows

    def _evaluate(
        self, config: Config, train: Rows, test: Rows, validation: Rows | None
    ) -> EvalResult:
        with tempfile.TemporaryDirectory(prefix="taskgate-eval-") as scratch:
            cache_dir = self._cache_dir if self._cache_dir is not None else Path(scratch)
            try:
                return self._run(config, train, test, validation, cache_dir)
            except DatasetError as exc:  # e.g. fewer than two labels in train
                raise InvalidRequest(str(exc), param="train", code="invalid_dataset") from exc
