"""docker-compose.yml: valid Compose, and consistent with the code it runs.

No Docker and no network. The file is interpolated the way Compose does it (``${VAR:-default}``
with a given environment) and validated against the Compose Specification's JSON Schema, vendored
in ``tests/data/compose-spec.json`` (where it comes from: ``tests/data/README.md``). Then the
things the schema cannot know: every ``ACESTEPS_*`` variable names a field of its service's
settings class and loads through it, the addresses agree with the ports Kafka, Kubo and anvil
listen on and with their health checks, the generator reserves a GPU, and no secret has a value.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from acesteps.settings import ChainSettings
from generator.settings import GeneratorSettings
from listener.settings import ListenerSettings
from publisher.settings import PublisherSettings
from tests.dockerfile import DOCKERFILE, dockerfile_stages

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"

# The settings class each service built from the Dockerfile loads.
SETTINGS: dict[str, type[BaseSettings]] = {
    "listener": ListenerSettings,
    "generator": GeneratorSettings,
    "publisher": PublisherSettings,
    "registry-deploy": ChainSettings,
}
LONG_RUNNING = ("listener", "generator", "publisher")
LOCAL_CHAIN = "local-chain"
# Kubo's image configures these on its first start (Addresses.API and Addresses.Gateway).
KUBO_API_PORT = 5001
KUBO_GATEWAY_PORT = 8080
SECRETS = (
    "ACESTEPS_API_KEYS",
    "ACESTEPS_PRIVATE_KEY",
    "ACESTEPS_KEYSTORE_PASSWORD",
    "ACESTEPS_CONTRACT_ADDRESS",
    "ACESTEPS_PUBLISHER_PINNING_SERVICES",
    "HF_TOKEN",
)
EXTERNAL_ENV = {
    "ACESTEPS_RPC_URL": "https://rpc.example.org",
    "ACESTEPS_CONTRACT_ADDRESS": "0x" + "12" * 20,
    "ACESTEPS_PRIVATE_KEY": "0x" + "ab" * 32,
    "ACESTEPS_IPFS_GATEWAY_URL": "https://ipfs.example.org",
    "ACESTEPS_LISTENER_CONFIRMATIONS": "12",
    "ACESTEPS_GENERATOR_MAX_BATCH": "2",
    "ACESTEPS_API_KEYS": '{"dapp": "a-long-random-secret"}',
}

# ------------------------------------------------------------------ interpolation, as Compose does

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _substitute(match: re.Match[str], env: dict[str, str]) -> str:
    if match["escaped"]:
        return "$"
    name = match["name"] or match["bare"]
    value, op, arg = env.get(name), match["op"], match["arg"] or ""
    assert "$" not in arg, f"nested interpolation is not supported here: {match[0]}"
    present = bool(value) if op and op.startswith(":") else value is not None
    if op in (":-", "-"):
        return value if present and value is not None else arg
    if op in (":?", "?"):
        if not present:
            raise KeyError(f"{name}: {arg}")
        return str(value)
    if op in (":+", "+"):
        return arg if present else ""
    return value or ""


def interpolate(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return _VAR.sub(lambda m: _substitute(m, env), node)
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    return node


def load(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return raw if env is None else interpolate(raw, env)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ helpers


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings; a name without a value is left out (Compose passes
    it through from its own environment only when set)."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    out = {}
    for key, value in env.items():
        if value is None:
            continue
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, published port, container port) of each short-syntax port mapping."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].rsplit(":", 2)
        host = parts[0] if len(parts) == 3 else "0.0.0.0"
        out.append((host, int(parts[-2]), int(parts[-1])))
    return out


def health_text(service: dict[str, Any]) -> str:
    return " ".join(str(part) for part in service["healthcheck"]["test"][1:])


def kafka_listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load({})


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------ the Compose Specification


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(validator: Draft202012Validator, document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


@pytest.mark.parametrize("env", [{}, EXTERNAL_ENV], ids=["defaults", "external-chain"])
def test_the_file_follows_the_compose_specification(
    validator: Draft202012Validator, env: dict[str, str]
) -> None:
    assert schema_errors(validator, load(env)) == []


_MISTAKES = {
    "misspelt key": lambda c: c["services"]["listener"].update(enviroment={}),
    "unknown condition": lambda c: c["services"]["publisher"]["depends_on"]["kafka"].update(
        condition="service_ready"
    ),
    "capabilities not a list": lambda c: c["services"]["generator"]["deploy"]["resources"][
        "reservations"
    ]["devices"][0].update(capabilities="gpu"),
    "required not a boolean": lambda c: c["services"]["listener"]["depends_on"]["kafka"].update(
        required="no"
    ),
}


@pytest.mark.parametrize("mistake", list(_MISTAKES))
def test_the_schema_catches_mistakes(
    validator: Draft202012Validator, compose: dict[str, Any], mistake: str
) -> None:
    # Guards against a vacuous check (a schema, or a validator, that accepts anything).
    broken = copy.deepcopy(compose)
    _MISTAKES[mistake](broken)
    assert schema_errors(validator, broken)


def test_healthchecks_start_the_way_compose_requires(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "healthcheck" in service:
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL", "NONE"), name


@pytest.mark.parametrize("profiles", [(), (LOCAL_CHAIN,)], ids=["external-chain", "local-chain"])
def test_dependencies_resolve_with_and_without_the_profile(
    services: dict[str, Any], profiles: tuple[str, ...]
) -> None:
    # Compose refuses a project in which an enabled service depends on a disabled one, unless
    # that dependency says `required: false`.
    enabled = {
        n
        for n, s in services.items()
        if not s.get("profiles") or set(s["profiles"]) & set(profiles)
    }
    for name in enabled:
        for dep, spec in services[name].get("depends_on", {}).items():
            assert dep in services, f"{name} depends on undefined {dep}"
            if dep not in enabled:
                assert spec.get("required") is False, f"{name} needs {dep}, off without profile"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
            if spec["condition"] == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} should run once"
    assert {"kafka", "kubo", *LONG_RUNNING} <= enabled


def test_services_wait_for_what_they_use(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert "healthcheck" in services[name], name
    assert services["publisher"]["depends_on"]["kubo"]["condition"] == "service_healthy"
    for name in ("listener", "publisher"):
        assert services[name]["depends_on"]["anvil"] == {
            "condition": "service_healthy",
            "required": False,
        }


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_acesteps_variable_names_a_settings_field(
    services: dict[str, Any], name: str
) -> None:
    cls = SETTINGS[name]
    assert cls.model_config.get("env_prefix") == "ACESTEPS_"
    variables = [v for v in environment(services[name]) if v.startswith("ACESTEPS_")]
    assert variables
    unknown = [v for v in variables if v.removeprefix("ACESTEPS_").lower() not in cls.model_fields]
    assert unknown == [], f"{name}: no such field in {cls.__name__}"


def test_every_built_service_has_its_settings_class(services: dict[str, Any]) -> None:
    built = {n for n, s in services.items() if "build" in s}
    assert built == set(SETTINGS)


@pytest.mark.parametrize("env", [{}, EXTERNAL_ENV], ids=["defaults", "external-chain"])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_environment_loads_through_the_settings(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str
) -> None:
    for key in list(os.environ):
        if key.startswith("ACESTEPS_"):
            monkeypatch.delenv(key)
    variables = environment(load(env)["services"][name])
    for key, value in variables.items():
        if key.startswith("ACESTEPS_") and value != "":  # the entrypoint drops empty ones
            monkeypatch.setenv(key, value)
    if name == "listener" and "ACESTEPS_API_KEYS" not in env:
        # The API binds every interface in its container: without keys it refuses to start,
        # with a message that says what to set.
        with pytest.raises(ValidationError, match="ACESTEPS_API_KEYS"):
            SETTINGS[name]()
        return
    settings = SETTINGS[name]()
    for key, value in env.items():
        if (
            key in variables
            and key.removeprefix("ACESTEPS_").lower() in type(settings).model_fields
        ):
            field = getattr(settings, key.removeprefix("ACESTEPS_").lower())
            if isinstance(field, dict):  # {"<key id>": SecretStr}, given as JSON
                shown = json.dumps({k: v.get_secret_value() for k, v in field.items()})
            else:
                shown = field.get_secret_value() if hasattr(field, "get_secret_value") else field
            assert str(shown) == value, key


def test_the_entrypoint_treats_empty_acesteps_variables_as_unset() -> None:
    line = next(x for x in DOCKERFILE.read_text().splitlines() if x.startswith("ENTRYPOINT"))
    argv = json.loads(line.removeprefix("ENTRYPOINT"))
    env = {"PATH": os.environ["PATH"], "ACESTEPS_PRIVATE_KEY": "", "ACESTEPS_RPC_URL": "http://x"}
    out = subprocess.run(
        [*argv, "env"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "ACESTEPS_RPC_URL=http://x" in out
    assert not any(x.startswith("ACESTEPS_PRIVATE_KEY") for x in out)


def test_importing_the_generator_settings_does_not_import_torch() -> None:
    code = (
        "import sys, generator.settings; "
        "sys.exit(sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)) or 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ addresses and ports


def test_kafka_bootstrap_is_an_advertised_listener(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = environment(kafka)
    bound = kafka_listeners(env["KAFKA_LISTENERS"])
    advertised = kafka_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(bound) == set(protocols)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller not in advertised and set(advertised) <= set(bound)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == env["KAFKA_NODE_ID"] and voter == f"kafka:{bound[controller][1]}"

    for listener, (host, port) in advertised.items():
        if host == "kafka":  # other containers connect straight to the bound port
            assert port == bound[listener][1], listener
        else:  # clients outside reach it through a published port
            assert ("127.0.0.1", port, bound[listener][1]) in published(kafka), listener

    for name in LONG_RUNNING:
        for server in environment(services[name])["ACESTEPS_KAFKA_BOOTSTRAP"].split(","):
            server_host, _, server_port = server.rpartition(":")
            assert (server_host, int(server_port)) in advertised.values(), f"{name}: {server}"
            assert server_host == "kafka", f"{name} should use the in-network listener"

    m = re.search(r"--bootstrap-server\s+localhost:(\d+)", health_text(kafka))
    assert m and int(m[1]) in {bound[n][1] for n in advertised}
    assert f"kafka-data:{env['KAFKA_LOG_DIRS']}" in kafka["volumes"]


def test_ipfs_urls_point_at_kubo(services: dict[str, Any]) -> None:
    kubo = services["kubo"]
    for name, service in services.items():
        env = environment(service)
        if "ACESTEPS_IPFS_API_URL" in env:
            url = urlsplit(env["ACESTEPS_IPFS_API_URL"])
            assert (url.hostname, url.port) == ("kubo", KUBO_API_PORT), name
        if "ACESTEPS_IPFS_GATEWAY_URL" in env:
            url = urlsplit(env["ACESTEPS_IPFS_GATEWAY_URL"])
            if url.hostname == "kubo":
                assert url.port == KUBO_GATEWAY_PORT, name
            else:  # the gateway as published on the host
                assert url.hostname == "127.0.0.1", name
                assert any(p == url.port and t == KUBO_GATEWAY_PORT for _, p, t in published(kubo))
    assert "ACESTEPS_IPFS_API_URL" in environment(services["publisher"])

    health = health_text(kubo)
    m = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*)", health)
    assert m and (int(m[1]), m[2]) == (KUBO_API_PORT, "/api/v0/version")
    assert "--post-data" in health  # the RPC answers POST only
    api = [(h, p) for h, p, t in published(kubo) if t == KUBO_API_PORT]
    assert api and all(h == "127.0.0.1" for h, _ in api), "the RPC API is admin access"
    assert "kubo-data:/data/ipfs" in kubo["volumes"]


def test_the_rpc_url_points_at_anvil(services: dict[str, Any]) -> None:
    anvil = services["anvil"]
    assert anvil["profiles"] == [LOCAL_CHAIN]
    args = [*anvil.get("entrypoint", []), *anvil["command"]]
    assert args[0] == "anvil" and args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1]) if "--port" in args else 8545
    for name in ("listener", "publisher", "registry-deploy"):
        url = urlsplit(environment(services[name])["ACESTEPS_RPC_URL"])
        assert (url.hostname, url.port) == ("anvil", port), name
    assert f"http://127.0.0.1:{port}" in health_text(anvil)
    assert [t for _, _, t in published(anvil)] == [port]


def test_metrics_ports_and_health_checks_agree(services: dict[str, Any]) -> None:
    ports = []
    for name in LONG_RUNNING:
        service = services[name]
        env = environment(service)
        assert env["ACESTEPS_METRICS_HOST"] == "0.0.0.0", name
        port = int(env["ACESTEPS_METRICS_PORT"])
        assert f"http://127.0.0.1:{port}/metrics" in health_text(service), name
        assert ("127.0.0.1", port, port) in published(service), name
        ports.append(port)
    assert len(set(ports)) == len(ports)


def test_the_api_port_health_check_and_status_volume_agree(services: dict[str, Any]) -> None:
    listener = services["listener"]
    env = environment(listener)
    port = int(env["ACESTEPS_API_PORT"])
    assert env["ACESTEPS_API_HOST"] == "0.0.0.0"
    assert ("127.0.0.1", 8000, port) in published(listener)  # loopback unless API_BIND is set
    assert f"http://127.0.0.1:{port}/healthz" in health_text(listener)
    store = env["ACESTEPS_API_STORE_URL"].removeprefix("sqlite:///")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in listener["volumes"]}
    assert any(store.startswith(target + "/") for target in mounts), (store, mounts)
    assert env["ACESTEPS_API_AUDIO_CACHE_DIR"].startswith("/var/lib/acesteps/status/")


# ------------------------------------------------------------------ GPU, images, secrets


def test_the_generator_reserves_a_gpu(services: dict[str, Any]) -> None:
    devices = services["generator"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and d.get("count") == 1 and "gpu" in d.get("capabilities", [])
        for d in devices
    )
    for name in ("listener", "publisher"):
        assert "deploy" not in services[name], f"{name} needs no GPU"


def test_services_are_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    stages = dockerfile_stages()
    assert DOCKERFILE.read_text().count("FROM python:3.11-slim") == 1
    for name in SETTINGS:
        assert services[name]["build"]["target"] in stages, name
    assert services["generator"]["build"]["target"] == "generator"
    assert ".[gen]" in stages["generator"] and ".[gen]" not in stages["runtime"]
    for name in LONG_RUNNING:
        assert services[name]["command"] == ["python", "-m", name]
        assert (ROOT / name / "__main__.py").is_file()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".cache/", ".git/", ".env"} <= set(ignored)


def test_no_secret_has_a_value() -> None:
    text = COMPOSE_FILE.read_text() + DOCKERFILE.read_text()
    assert not re.search(r"0x[0-9a-fA-F]{64}", text), "a private key in the file"
    for name, service in load()["services"].items():
        for key, value in environment(service).items():
            if key in SECRETS:
                assert value in (f"${{{key}:-}}", f"${{{key}}}"), f"{name}: {key}"
