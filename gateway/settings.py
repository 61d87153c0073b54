"""Process settings: the only module that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

ENV_CONFIG = "TASKGATE_CONFIG"
ENV_HOME = "TASKGATE_HOME"
ENV_LOG_LEVEL = "TASKGATE_LOG_LEVEL"
ENV_REDIS_URL = "TASKGATE_REDIS_URL"


def default_home() -> Path:
    return Path.home() / ".cache" / "taskgate"


@dataclass(frozen=True, slots=True)
class Settings:
    # None: the embedded default config.
    config_path: Path | None = None
    # Where converted model weights and other caches live.
    home: Path = field(default_factory=default_home)
    log_level: str = "INFO"
    # Overrides the config's memory with Redis at this URL.
    redis_url: str | None = None
    # Variables `${NAME}` in the config may refer to.
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        source = dict(os.environ if environ is None else environ)
        config = source.get(ENV_CONFIG)
        home = source.get(ENV_HOME)
        return cls(
            config_path=Path(config) if config else None,
            home=Path(home) if home else default_home(),
            log_level=source.get(ENV_LOG_LEVEL, "INFO").upper(),
            redis_url=source.get(ENV_REDIS_URL) or None,
            env=source,
        )

    def with_config(self, path: Path | None) -> Settings:
        return replace(self, config_path=path) if path is not None else self
