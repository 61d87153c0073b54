"""Structured JSON log lines: message, level, logger, and whatever `extra` a call adds."""

from __future__ import annotations

import json
import logging
import time

# Record attributes that are not `extra` fields (uvicorn adds an ANSI-coloured copy).
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def quiet_model_loading() -> None:
    """No progress bars on stderr when models load."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def configure_logging(level: str) -> None:
    """JSON lines on stderr for our loggers and uvicorn's; no progress bars from model loads."""
    quiet_model_loading()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.Formatter.converter = time.gmtime
    # httpx logs every upstream request at INFO; the gateway's own "routed" line and
    # uvicorn's access line already say what happened, so only its warnings are kept.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
