"""docker-compose.yml, .env.example and config/compose.yaml, checked statically.

There is no Docker engine here: the file is read as docker compose would read it (YAML,
merges, `${VAR}` interpolation), and the config each gateway service would run is loaded
with the environment that service would give it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from experts.specs import OpenAISpec
from gateway.cli import main
from gateway.config import Config, load_config, with_redis_url
from tests.deploy import compose
from tests.deploy.dockerfile import load as load_dockerfile

ROOT = compose.ROOT
DEFAULT_SERVICES = {"gateway", "redis"}
GPU_SERVICES = {"vllm-code", "vllm-chat", "gateway-gpu"}
GATEWAYS = ("gateway", "gateway-gpu")
VLLM = ("vllm-code", "vllm-chat")
# A custom environment, as an operator's `.env` would set it.
CUSTOM_ENV = {
    "VLLM_CODE_MODEL": "org/Coder-7B",
    "VLLM_CODE_NAME": "my-coder",
    "VLLM_CHAT_NAME": "my-chat",
    "TASKGATE_PORT": "9000",
    "VLLM_API_KEY": "sk-test",
}
ENVIRONMENTS = {"defaults": {}, "env-example": compose.env_example(), "custom": CUSTOM_ENV}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, object]]:
    return compose.services(compose.load({}))


def profiles(service: Mapping[str, object]) -> list[str]:
    value = service.get("profiles") or []
    assert isinstance(value, list)
    return value


def healthcheck_text(service: Mapping[str, object]) -> str:
    healthcheck = service.get("healthcheck")
    assert isinstance(healthcheck, dict), "every service has a healthcheck"
    test = healthcheck["test"]
    assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"}
    return " ".join(test[1:])


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


# ---------------------------------------------------------------------------------------
# The file and its services.


def test_the_file_parses_with_known_top_level_keys() -> None:
    data = compose.raw()
    known = {"services", "volumes", "networks", "configs", "secrets", "name", "include"}
    assert {key for key in data if not key.startswith("x-")} <= known
    assert "version" not in data  # obsolete in the compose specification


def test_plain_up_runs_the_gateway_and_redis(services: dict[str, dict[str, object]]) -> None:
    assert {name for name, s in services.items() if not profiles(s)} == DEFAULT_SERVICES


def test_the_gpu_profile_adds_vllm_servers_and_their_gateway(
    services: dict[str, dict[str, object]],
) -> None:
    assert {name for name, s in services.items() if profiles(s)} == GPU_SERVICES
    assert all(profiles(services[name]) == ["gpu"] for name in GPU_SERVICES)


def test_images(services: dict[str, dict[str, object]]) -> None:
    redis = services["redis"]["image"]
    assert isinstance(redis, str)
    name, _, tag = redis.partition(":")
    assert name == "redis" and int(tag.split(".")[0]) >= 8, "Redis 8 has vector search"
    for name in VLLM:
        image = services[name]["image"]
        assert isinstance(image, str) and image.startswith("vllm/vllm-openai:")
        assert not image.endswith(":latest"), "a pinned vLLM release"
    images = {services[name]["image"] for name in GATEWAYS}
    assert len(images) == 1, "both gateways run the same image"
    for name in GATEWAYS:
        build = services[name]["build"]
        assert isinstance(build, dict)
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_ports(services: dict[str, dict[str, object]]) -> None:
    exposed = load_dockerfile(ROOT / "Dockerfile").final.last("EXPOSE")
    assert exposed is not None
    assert services["gateway"]["ports"] == ["8000:8000"]
    assert services["gateway-gpu"]["ports"] == ["8001:8000"]
    for name in GATEWAYS:
        ports = services[name]["ports"]
        assert isinstance(ports, list)
        assert ports[0].split(":")[-1] in exposed.args.split()
    # The model servers and Redis stay on the compose network.
    assert all("ports" not in services[name] for name in (*VLLM, "redis"))
    custom = compose.services(compose.load(CUSTOM_ENV))
    assert custom["gateway"]["ports"] == ["9000:8000"]


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, object]]) -> None:
    assert "redis-cli ping" in healthcheck_text(services["redis"])
    for name in GATEWAYS:
        assert "http://127.0.0.1:8000/readyz" in healthcheck_text(services[name])
    for name in VLLM:
        assert "http://127.0.0.1:8000/health" in healthcheck_text(services[name])
        healthcheck = services[name]["healthcheck"]
        assert isinstance(healthcheck, dict) and "start_period" in healthcheck


def test_depends_on_waits_for_health(services: dict[str, dict[str, object]]) -> None:
    wanted = {"gateway": {"redis"}, "gateway-gpu": {"redis", *VLLM}}
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: long form, with conditions"
        assert set(depends_on) == wanted.get(name, set())
        for target, condition in depends_on.items():
            assert condition["condition"] == "service_healthy", f"{name} -> {target}"
            assert "healthcheck" in services[target]
            # A service that runs by default never waits on one that only a profile starts.
            assert profiles(services[target]) in ([], profiles(service))


def test_redis_persists_to_a_named_volume(services: dict[str, dict[str, object]]) -> None:
    redis = services["redis"]
    command = redis["command"]
    assert isinstance(command, list) and option(command, "--appendonly") == "yes"
    (data,) = compose.mounts(redis)
    assert data.target == "/data" and not data.is_bind
    declared = compose.raw()["volumes"]
    assert isinstance(declared, dict) and data.source in declared


def test_the_config_is_mounted_read_only(services: dict[str, dict[str, object]]) -> None:
    for name in GATEWAYS:
        binds = [m for m in compose.mounts(services[name]) if m.is_bind]
        assert [(m.source, m.target) for m in binds] == [("./config", "/etc/taskgate")]
        assert all(m.read_only for m in binds), f"{name}: the config is mounted :ro"
        assert (ROOT / binds[0].source).is_dir()


def test_the_gpu_services_reserve_nvidia_gpus(services: dict[str, dict[str, object]]) -> None:
    for name in VLLM:
        deploy = services[name]["deploy"]
        assert isinstance(deploy, dict)
        (device,) = deploy["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert "gpu" in device["capabilities"]
        assert "count" in device or "device_ids" in device


def test_vllm_model_and_served_name_come_from_env() -> None:
    raw = compose.services(compose.raw())
    custom = compose.services(compose.load(CUSTOM_ENV))
    for name, prefix in (("vllm-code", "VLLM_CODE"), ("vllm-chat", "VLLM_CHAT")):
        command, set_command = raw[name]["command"], custom[name]["command"]
        assert isinstance(command, list) and isinstance(set_command, list)
        for flag, variable in (
            ("--model", f"{prefix}_MODEL"),
            ("--served-model-name", f"{prefix}_NAME"),
        ):
            (reference,) = compose.references(option(command, flag))
            assert reference.name == variable and reference.default
            assert option(set_command, flag) == CUSTOM_ENV.get(variable, reference.default)
        environment = compose.environment(raw[name])
        assert compose.references(environment["HF_TOKEN"])[0].name == "HF_TOKEN"


def test_secrets_only_come_from_the_environment() -> None:
    secret = re.compile(r"TOKEN|KEY|SECRET|PASSWORD", re.IGNORECASE)
    for name, service in compose.services(compose.raw()).items():
        for key, value in compose.environment(service).items():
            if secret.search(key):
                (reference,) = compose.references(value)
                assert value == f"${{{reference.name}:-}}", f"{name}.{key}: no literal secret"


# ---------------------------------------------------------------------------------------
# Variables: defaults, .env.example, .gitignore.


def test_every_variable_has_a_default_or_is_documented() -> None:
    documented = compose.env_example()
    text = compose.COMPOSE_FILE.read_text(encoding="utf-8")
    for reference in compose.references(text):
        assert reference.default is not None or reference.name in documented, reference.name


def test_env_example_documents_every_variable_with_its_default() -> None:
    documented = compose.env_example()
    defaults: dict[str, set[str]] = {}
    for reference in compose.references(compose.COMPOSE_FILE.read_text(encoding="utf-8")):
        if reference.default is not None:
            defaults.setdefault(reference.name, set()).add(reference.default)
    assert set(documented) == set(defaults), "documented = used"
    for name, values in defaults.items():
        assert values == {documented[name]}, f"{name}: one default, the one documented"


def test_config_defaults_agree_with_compose() -> None:
    in_compose = {
        r.name: r.default
        for r in compose.references(compose.COMPOSE_FILE.read_text(encoding="utf-8"))
    }
    for path in sorted((ROOT / "config").glob("*.yaml")):
        for reference in compose.references(path.read_text(encoding="utf-8")):
            if reference.name in in_compose:
                assert reference.default == in_compose[reference.name], (
                    f"{path.name}: ${{{reference.name}}} defaults differ from the compose file"
                )


def test_the_real_env_file_is_git_ignored() -> None:
    lines = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in {line.strip() for line in lines}


# ---------------------------------------------------------------------------------------
# The config each gateway runs.


def gateway_config(name: str, env: Mapping[str, str]) -> tuple[Config, dict[str, str]]:
    """The config service `name` runs when compose has `env`, and the container env."""
    service = compose.services(compose.load(env))[name]
    container_env = compose.environment(service)
    path = host_path(service, container_env.get("TASKGATE_CONFIG", ""))
    config = load_config(path, container_env)
    return with_redis_url(config, container_env.get("TASKGATE_REDIS_URL")), container_env


def host_path(service: Mapping[str, object], container_path: str) -> Path | None:
    """Where a file the container sees under a bind mount lives in the repository."""
    if not container_path:
        return None  # the embedded default
    for mount in compose.mounts(service):
        target = mount.target.rstrip("/") + "/"
        if mount.is_bind and container_path.startswith(target):
            return ROOT / mount.source / container_path.removeprefix(target)
    raise AssertionError(f"{container_path} is not under a bind mount")


@pytest.mark.parametrize("env", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
@pytest.mark.parametrize("name", GATEWAYS)
def test_each_gateway_config_is_valid_and_uses_redis(name: str, env: dict[str, str]) -> None:
    services = compose.services(compose.load(env))
    config, _ = gateway_config(name, env)
    assert config.memory.backend == "redis"
    assert config.memory.url is not None
    assert urlsplit(config.memory.url).hostname in services


def test_plain_up_serves_the_embedded_default() -> None:
    config, container_env = gateway_config("gateway", {})
    assert container_env["TASKGATE_CONFIG"] == ""
    assert config.experts == load_config(None, {}).experts


@pytest.mark.parametrize("env", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_the_gpu_gateway_registers_the_vllm_servers(env: dict[str, str]) -> None:
    services = compose.services(compose.load(env))
    config, _ = gateway_config("gateway-gpu", env)
    remote = [spec for spec in config.experts if isinstance(spec, OpenAISpec)]
    assert {urlsplit(spec.base_url).hostname for spec in remote} == set(VLLM)
    for spec in remote:
        url = urlsplit(spec.base_url)
        server = services[str(url.hostname)]
        command = server["command"]
        assert isinstance(command, list)
        assert url.port == 8000 and "--port" not in command  # vLLM's default port
        assert spec.model == option(command, "--served-model-name")
        assert spec.fallbacks, f"{spec.name}: a fallback answers while its server is down"
        key = spec.api_key.get_secret_value() if spec.api_key else ""
        assert key == compose.environment(server)["VLLM_API_KEY"]
    tools = {spec.name for spec in config.experts if spec.kind == "tool"}
    assert tools == {"calculator", "units"}


def test_taskgate_check_config_passes_in_the_gpu_gateway_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    service = compose.services(compose.load({}))["gateway-gpu"]
    container_env = compose.environment(service)
    path = host_path(service, container_env["TASKGATE_CONFIG"])
    assert path is not None
    for reference in compose.references(path.read_text(encoding="utf-8")):
        monkeypatch.delenv(reference.name, raising=False)  # only what the container has
    for key, value in container_env.items():
        monkeypatch.setenv(key, value)
    assert main(["check-config", str(path)]) == 0
    assert "ok, 5 experts" in capsys.readouterr().out
