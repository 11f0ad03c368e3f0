"""deploy/kubernetes: valid Kubernetes and KEDA objects, and consistent with the code they run.

kubeconform validates every manifest strictly (no unknown field) against the JSON Schemas of
Kubernetes' built-in kinds and of KEDA's CRDs, without a cluster and offline: scripts/kubeconform
installs it and builds the schemas once under .cache/kubeconform, from PyPI and the Go module
proxy (``scripts/test`` does it before the tests, so that the tests themselves use no network;
run on its own, this test calls the script, which installs what is missing). Where that cannot
happen the test fails, saying why; it is never skipped. Then what the schemas cannot know:
every ``ACESTEPS_*`` variable names a field of its service's settings class and loads through
it, the generator gets a GPU, instance ids are the pod names, the KEDA trigger watches the
consumer group and topic that the generator's code computes, and no secret has a value.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_account import Account
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from generator.settings import GeneratorSettings
from listener.settings import ListenerSettings
from publisher.settings import PublisherSettings
from tests.dockerfile import dockerfile_stages

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KEDA = K8S / "keda"
SCRIPT = ROOT / "scripts" / "kubeconform"
GENERATOR_SERVICE = ROOT / "generator" / "service.py"
CONSUMING = ROOT / "acesteps" / "kafka" / "consuming.py"

# Each workload, the settings class its process loads, its module and its Dockerfile stage.
WORKLOADS: dict[str, tuple[type[BaseSettings], str, str]] = {
    "acesteps-listener": (ListenerSettings, "listener", "runtime"),
    "acesteps-api": (ListenerSettings, "listener", "runtime"),
    "acesteps-generator": (GeneratorSettings, "generator", "generator"),
    "acesteps-publisher": (PublisherSettings, "publisher", "runtime"),
}
IMAGES = {"runtime": "acesteps:latest", "generator": "acesteps-generator:latest"}
SECRET = "acesteps-secrets"
KEYS_SECRET = "acesteps-publisher-keys"
# What an operator puts into the Secret (test values), and into the ConfigMaps' blanks.
SECRET_VALUES = {
    "ACESTEPS_KAFKA_SASL_USERNAME": "acesteps",
    "ACESTEPS_KAFKA_SASL_PASSWORD": "a-kafka-password",
    "ACESTEPS_API_KEYS": '{"dapp": "a-long-random-secret"}',
    "ACESTEPS_API_STORE_URL": "postgresql://acesteps:a-password@postgres:5432/acesteps",
    "ACESTEPS_KEYSTORE_PASSWORD": "a-keystore-password",
    "ACESTEPS_PUBLISHER_PINNING_SERVICES": (
        '[{"name": "pinata", "endpoint": "https://api.pinata.cloud/psa", "token": "a-token"}]'
    ),
    "HF_TOKEN": "a-hub-token",
}
FILLED_IN = {"ACESTEPS_CONTRACT_ADDRESS": "0x" + "12" * 20}
SECRET_NAMES = {*SECRET_VALUES, "ACESTEPS_PRIVATE_KEY"}
# KEDA's Kafka scaler names the SASL mechanisms its own way.
KEDA_SASL = {
    "PLAIN": "plaintext",
    "SCRAM-SHA-256": "scram_sha256",
    "SCRAM-SHA-512": "scram_sha512",
    "OAUTHBEARER": "oauthbearer",
}

# ------------------------------------------------------------------ reading the manifests


def manifest_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in manifest_files():
        for doc in load_all(path):
            if doc["kind"] == "Kustomization":
                continue
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out


@pytest.fixture(scope="module")
def workloads(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: doc for (kind, name), doc in objects.items() if kind in ("Deployment", "StatefulSet")
    }


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return containers[0]  # type: ignore[no-any-return]


def env_item(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in container(workload).get("env", []) if e["name"] == name)


def pod_name(workload: dict[str, Any]) -> str:
    name = workload["metadata"]["name"]
    return f"{name}-0" if workload["kind"] == "StatefulSet" else f"{name}-7d4b9c8f6d-x2k9q"


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def environment(
    workload: dict[str, Any],
    objects: dict[tuple[str, str], dict[str, Any]],
    secrets: dict[str, str] | None,
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in
    order, with $(VAR) expanded from what is defined before. Secret values come from
    ``secrets``, or from the example Secret when None; an optional key that is absent is
    left out."""
    c = container(workload)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for item in c.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = _VAR_REF.sub(lambda m: env.get(m[1], m[0]), str(item["value"]))
            continue
        ref = item["valueFrom"]
        if "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "metadata.name", name
            env[name] = pod_name(workload)
        elif "secretKeyRef" in ref:
            key = ref["secretKeyRef"]["key"]
            example = objects[("Secret", ref["secretKeyRef"]["name"])]["stringData"]
            assert key in example, f"{name}: the example Secret has no {key}"
            values = example if secrets is None else secrets
            if key in values:
                env[name] = values[key]
            else:
                assert ref["secretKeyRef"].get("optional"), name
        elif "configMapKeyRef" in ref:
            env[name] = objects[("ConfigMap", ref["configMapKeyRef"]["name"])]["data"][
                ref["configMapKeyRef"]["key"]
            ]
        else:
            raise AssertionError(f"{name}: unexpected valueFrom {ref}")
    return env


def load_settings(
    monkeypatch: pytest.MonkeyPatch, cls: type[BaseSettings], env: dict[str, str]
) -> BaseSettings:
    """The settings the process would load: empty ACESTEPS_* variables are dropped, as the
    image's entrypoint does."""
    for key in list(os.environ):
        if key.startswith("ACESTEPS_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("ACESTEPS_") and value != "":
            monkeypatch.setenv(key, value)
    return cls()


def as_text(value: Any) -> str | None:
    """A settings field as the variable that set it reads, where that is plain."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float | Path):
        return str(value)
    if isinstance(value, dict) and all(isinstance(v, SecretStr) for v in value.values()):
        return json.dumps({k: v.get_secret_value() for k, v in value.items()})
    return None


# ------------------------------------------------------------------ kubeconform


def kubeconform(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=540
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/kubeconform took over {exc.timeout:.0f}s:\n{exc.stderr!r}")


def test_the_manifests_follow_the_kubernetes_and_keda_schemas(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    result = kubeconform()
    assert result.returncode == 0, (
        "scripts/kubeconform failed (it installs kubeconform with Go and builds the schemas "
        "from PyPI and the Go module proxy on its first run):\n" + result.stdout + result.stderr
    )
    # Every object was checked against a schema: none skipped, none missing.
    assert f"Summary: {len(objects)} resources found" in result.stdout, result.stdout
    assert f"Valid: {len(objects)}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split("/")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value


def _rename(path: str, new: str) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[new] = node.pop(last)

    return apply


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: _set_path(doc, path, value)


POD = "spec/template/spec"
# (kind, name) of an object, the mistake, and what kubeconform must say (None: valid).
_MISTAKES: dict[str, tuple[tuple[str, str], Callable[[dict[str, Any]], None], str | None]] = {
    "unchanged StatefulSet": (("StatefulSet", "acesteps-generator"), lambda d: None, None),
    "unchanged ScaledObject": (("ScaledObject", "acesteps-generator"), lambda d: None, None),
    "misspelt field in a StatefulSet's pod": (
        ("StatefulSet", "acesteps-generator"),
        _rename(f"{POD}/terminationGracePeriodSeconds", "terminationGracePeriodSecond"),
        "additional properties 'terminationGracePeriodSecond' not allowed",
    ),
    "GPU limit under a misspelt key": (
        ("StatefulSet", "acesteps-generator"),
        _rename(f"{POD}/containers/0/resources/limits", "limit"),
        "additional properties 'limit' not allowed",
    ),
    "port by name where a number goes": (
        ("Deployment", "acesteps-listener"),
        _set(f"{POD}/containers/0/ports/0/containerPort", "http"),
        "containerPort': got string, want integer",
    ),
    "misspelt field reference": (
        ("StatefulSet", "acesteps-publisher"),
        _rename(f"{POD}/containers/0/env/0/valueFrom/fieldRef/fieldPath", "fieldpath"),
        "missing property 'fieldPath'",
    ),
    "lag threshold as a number": (
        ("ScaledObject", "acesteps-generator"),
        _set("spec/triggers/0/metadata/lagThreshold", 8),
        "lagThreshold': got number, want string",
    ),
    "replica count as a string": (
        ("ScaledObject", "acesteps-generator"),
        _set("spec/minReplicaCount", "1"),
        "minReplicaCount': got string, want integer",
    ),
    "misspelt field in a ScaledObject's metadata": (
        ("ScaledObject", "acesteps-generator"),
        _rename("metadata/labels", "label"),
        "additional properties 'label' not allowed",
    ),
    "misspelt field in a TriggerAuthentication": (
        ("TriggerAuthentication", "acesteps-kafka"),
        _rename("spec/secretTargetRef/0/parameter", "parameters"),
        "additional properties 'parameters' not allowed",
    ),
}


@pytest.mark.parametrize("mistake", list(_MISTAKES))
def test_kubeconform_rejects_a_broken_manifest(
    objects: dict[tuple[str, str], dict[str, Any]], tmp_path: Path, mistake: str
) -> None:
    # Guards against a vacuous check: schemas, or a validator, that accept anything.
    key, change, expected = _MISTAKES[mistake]
    doc = copy.deepcopy(objects[key])
    change(doc)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = kubeconform("-output", "json", str(manifest))
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"scripts/kubeconform gave no report:\n{result.stdout}{result.stderr}")
    if expected is None:
        assert result.returncode == 0, result.stdout
        assert report["summary"]["valid"] == 1, report
        return
    assert result.returncode == 1, result.stdout + result.stderr
    [resource] = report["resources"]
    assert resource["status"] == "statusInvalid", resource
    assert expected in resource["msg"], resource["msg"]


# ------------------------------------------------------------------ layout


def test_kustomizations_list_every_manifest_but_the_secrets() -> None:
    for folder in (K8S, KEDA):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert kustomization["namespace"] == "acesteps", folder
        files = {p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml"}
        examples = {name for name in files if name.endswith(".example.yaml")}
        # Applying must never replace the real Secrets with the example's empty values.
        assert set(kustomization["resources"]) == files - examples, folder
        for name in kustomization["resources"]:
            assert all(doc["kind"] != "Secret" for doc in load_all(folder / name)), name
    assert {d["kind"] for d in load_all(K8S / "secret.example.yaml")} == {"Secret"}
    # KEDA's objects need its CRDs: they stay out of the main kustomization.
    main = [d["kind"] for p in K8S.glob("*.yaml") for d in load_all(p)]
    assert not {"ScaledObject", "TriggerAuthentication"} & set(main)


def test_every_workload_runs_its_service_from_its_image(
    workloads: dict[str, dict[str, Any]],
) -> None:
    assert set(workloads) == set(WORKLOADS)
    stages = dockerfile_stages()
    assert "ENTRYPOINT" in stages["base"]
    for name, workload in workloads.items():
        _, module, stage = WORKLOADS[name]
        c = container(workload)
        assert stage in stages and c["image"] == IMAGES[stage], name
        assert c["args"] == ["python", "-m", module], name
        assert (ROOT / module / "__main__.py").is_file()
        # `command` would replace the entrypoint that drops empty ACESTEPS_* variables.
        assert "command" not in c, name
        assert workload["spec"]["selector"]["matchLabels"].items() <= (
            workload["spec"]["template"]["metadata"]["labels"].items()
        ), name
    assert ".[gen]" in stages["generator"] and ".[gen]" not in stages["runtime"]


def test_one_chain_poller_and_api_only_replicas(workloads: dict[str, dict[str, Any]]) -> None:
    # The chain poller's transactional id is per chain and contract: a second copy fences it.
    listener = workloads["acesteps-listener"]
    assert listener["kind"] == "Deployment"
    assert listener["spec"]["replicas"] == 1
    assert listener["spec"]["strategy"]["type"] == "Recreate"
    api = workloads["acesteps-api"]
    assert env_item(api, "ACESTEPS_LISTENER_CHAIN_ENABLED")["value"] == "false"
    assert all(e["name"] != "ACESTEPS_LISTENER_CHAIN_ENABLED" for e in container(listener)["env"])
    for workload in (listener, api):  # one store for all API processes: from the Secret
        ref = env_item(workload, "ACESTEPS_API_STORE_URL")["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (SECRET, "ACESTEPS_API_STORE_URL")


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_acesteps_variable_names_a_settings_field(
    objects: dict[tuple[str, str], dict[str, Any]],
    workloads: dict[str, dict[str, Any]],
    name: str,
) -> None:
    cls = WORKLOADS[name][0]
    assert cls.model_config.get("env_prefix") == "ACESTEPS_"
    env = environment(workloads[name], objects, SECRET_VALUES)
    unknown = [
        v
        for v in env
        if v.startswith("ACESTEPS_") and v.removeprefix("ACESTEPS_").lower() not in cls.model_fields
    ]
    assert unknown == [], f"{name}: no such field in {cls.__name__}"
    others = {v for v in env if not v.startswith("ACESTEPS_")}
    assert others <= ({"HF_TOKEN"} if name == "acesteps-generator" else set()), others


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_the_environment_loads_through_the_settings(
    monkeypatch: pytest.MonkeyPatch,
    objects: dict[tuple[str, str], dict[str, Any]],
    workloads: dict[str, dict[str, Any]],
    name: str,
) -> None:
    env = environment(workloads[name], objects, SECRET_VALUES)
    env.update({k: v for k, v in FILLED_IN.items() if k in env})
    settings = load_settings(monkeypatch, WORKLOADS[name][0], env)
    checked = 0
    for key, value in env.items():
        if key.startswith("ACESTEPS_") and value != "":
            shown = as_text(getattr(settings, key.removeprefix("ACESTEPS_").lower()))
            if shown is not None:
                assert shown == value, key
                checked += 1
    assert checked >= 10, checked
    common = objects[("ConfigMap", "acesteps-common")]["data"]
    assert settings.kafka_replication_factor == 3  # type: ignore[attr-defined]
    assert settings.kafka_min_insync_replicas == 2  # type: ignore[attr-defined]
    assert settings.topic_prefix == common["ACESTEPS_TOPIC_PREFIX"]  # type: ignore[attr-defined]
    security = settings.kafka_security()  # type: ignore[attr-defined]
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    if isinstance(settings, ListenerSettings):
        assert settings.api_auth_required and settings.api_keys
    if isinstance(settings, PublisherSettings):
        assert len(settings.publisher_pinning_services) == 1


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_with_the_example_secret_nothing_starts(
    monkeypatch: pytest.MonkeyPatch,
    objects: dict[tuple[str, str], dict[str, Any]],
    workloads: dict[str, dict[str, Any]],
    name: str,
) -> None:
    # Empty secrets are unset ones: each service refuses to start and names what is missing.
    env = environment(workloads[name], objects, None)
    with pytest.raises(ValidationError, match="needs a username and a password"):
        load_settings(monkeypatch, WORKLOADS[name][0], env)


def test_metrics_and_probes_use_the_ports_the_settings_bind(
    objects: dict[tuple[str, str], dict[str, Any]], workloads: dict[str, dict[str, Any]]
) -> None:
    for name, workload in workloads.items():
        env = environment(workload, objects, SECRET_VALUES)
        c = container(workload)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert env["ACESTEPS_METRICS_HOST"] == "0.0.0.0", name
        assert ports["metrics"] == int(env["ACESTEPS_METRICS_PORT"]), name
        probes = [c[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in c]
        assert "livenessProbe" in c and "startupProbe" in c, name
        for probe in probes:
            assert probe["httpGet"]["port"] in ports, name
        if WORKLOADS[name][1] == "listener":
            assert env["ACESTEPS_API_HOST"] == "0.0.0.0", name
            assert ports["http"] == int(env["ACESTEPS_API_PORT"]), name
            assert "readinessProbe" in c, name
            assert all(p["httpGet"] == {"path": "/healthz", "port": "http"} for p in probes)
        else:
            assert all(p["httpGet"] == {"path": "/metrics", "port": "metrics"} for p in probes)


def test_services_select_their_pods(
    objects: dict[tuple[str, str], dict[str, Any]], workloads: dict[str, dict[str, Any]]
) -> None:
    services = {name: doc for (kind, name), doc in objects.items() if kind == "Service"}
    selected = {}
    for name, service in services.items():
        selector = service["spec"]["selector"].items()
        pods = {
            w: workload
            for w, workload in workloads.items()
            if selector <= workload["spec"]["template"]["metadata"]["labels"].items()
        }
        selected[name] = set(pods)
        for port in service["spec"]["ports"]:
            for w, workload in pods.items():
                assert port["targetPort"] in {p["name"] for p in container(workload)["ports"]}, w
    assert selected["acesteps-api"] == {"acesteps-listener", "acesteps-api"}
    for name in ("acesteps-generator", "acesteps-publisher"):
        assert workloads[name]["spec"]["serviceName"] == name
        assert services[name]["spec"]["clusterIP"] == "None"
        assert selected[name] == {name}


# ------------------------------------------------------------------ GPU, identity


def test_the_generator_requests_one_gpu(workloads: dict[str, dict[str, Any]]) -> None:
    generator = workloads["acesteps-generator"]
    resources = container(generator)["resources"]
    assert str(resources["limits"]["nvidia.com/gpu"]) == "1"
    assert env_item(generator, "ACESTEPS_GENERATOR_DEVICE")["value"] == "cuda"
    for name in set(workloads) - {"acesteps-generator"}:
        assert "nvidia.com/gpu" not in str(container(workloads[name])["resources"]), name
    # It finishes its batch on SIGTERM (compose: stop_grace_period 2m).
    assert pod_spec(generator)["terminationGracePeriodSeconds"] >= 120
    # The model cache: a volume per pod, where the image's HF_HOME points.
    hf_home = re.search(r"^ENV HF_HOME=(\S+)$", dockerfile_stages()["generator"], re.MULTILINE)
    assert hf_home
    [claim] = generator["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container(generator)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == hf_home[1]


@pytest.mark.parametrize("name", ["acesteps-generator", "acesteps-publisher"])
def test_instance_ids_come_from_the_pod_name(
    monkeypatch: pytest.MonkeyPatch,
    objects: dict[tuple[str, str], dict[str, Any]],
    workloads: dict[str, dict[str, Any]],
    name: str,
) -> None:
    # The id names the Kafka transactional id: stable across restarts and unique per pod, which
    # a StatefulSet's pod names are (a Deployment's are random).
    workload = workloads[name]
    assert workload["kind"] == "StatefulSet"
    variable = f"ACESTEPS_{name.removeprefix('acesteps-').upper()}_INSTANCE_ID"
    assert env_item(workload, variable)["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    env = environment(workload, objects, SECRET_VALUES) | FILLED_IN
    settings = load_settings(monkeypatch, WORKLOADS[name][0], env)
    assert getattr(settings, variable.removeprefix("ACESTEPS_").lower()) == f"{name}-0"


def test_each_publisher_signs_with_its_own_key(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    objects: dict[tuple[str, str], dict[str, Any]],
    workloads: dict[str, dict[str, Any]],
) -> None:
    publisher = workloads["acesteps-publisher"]
    assert publisher["spec"]["replicas"] == 1
    names = [e["name"] for e in container(publisher)["env"]]
    keystore = env_item(publisher, "ACESTEPS_KEYSTORE_FILE")["value"]
    assert "$(ACESTEPS_PUBLISHER_INSTANCE_ID)" in keystore
    assert names.index("ACESTEPS_PUBLISHER_INSTANCE_ID") < names.index("ACESTEPS_KEYSTORE_FILE")
    # The keystore is the file named after the pod in the keys Secret's volume.
    volumes = {v["name"]: v for v in pod_spec(publisher)["volumes"]}
    [mount] = [
        m
        for m in container(publisher)["volumeMounts"]
        if volumes[m["name"]].get("secret", {}).get("secretName") == KEYS_SECRET
    ]
    assert mount.get("readOnly") is True
    assert Path(keystore).parent == Path(mount["mountPath"])
    assert f"{pod_name(publisher)}.json" in objects[("Secret", KEYS_SECRET)]["stringData"]
    # A shared key in a Secret would be every replica's key.
    for path in manifest_files():
        assert "ACESTEPS_PRIVATE_KEY" not in path.read_text(), path

    # End to end: the pod finds its key in its own keystore.
    env = environment(publisher, objects, SECRET_VALUES) | FILLED_IN
    account = Account.create()
    local = Path(env["ACESTEPS_KEYSTORE_FILE"].replace(mount["mountPath"], str(tmp_path), 1))
    assert local.name == f"{pod_name(publisher)}.json"
    encrypted = Account.encrypt(
        account.key, env["ACESTEPS_KEYSTORE_PASSWORD"], kdf="pbkdf2", iterations=2
    )
    local.write_text(json.dumps(encrypted))
    env["ACESTEPS_KEYSTORE_FILE"] = str(local)
    settings = load_settings(monkeypatch, PublisherSettings, env)
    assert isinstance(settings, PublisherSettings)
    assert settings.signing_key() == "0x" + account.key.hex()


# ------------------------------------------------------------------ KEDA


def _loop_config(path: Path, function: str) -> dict[str, ast.expr]:
    """The keyword arguments of the LoopConfig(...) call in ``function`` of ``path``."""
    tree = ast.parse(path.read_text())
    fn = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function
    )
    call = next(
        n
        for n in ast.walk(fn)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "LoopConfig"
    )
    return {kw.arg: kw.value for kw in call.keywords if kw.arg}


def _evaluate(expr: ast.expr, path: Path, **names: Any) -> Any:
    return eval(compile(ast.Expression(expr), str(path), "eval"), {}, names)


def test_the_scaled_object_watches_what_the_generator_consumes(
    monkeypatch: pytest.MonkeyPatch,
    objects: dict[tuple[str, str], dict[str, Any]],
    workloads: dict[str, dict[str, Any]],
) -> None:
    generator = workloads["acesteps-generator"]
    env = environment(generator, objects, SECRET_VALUES)
    settings = load_settings(monkeypatch, GeneratorSettings, env)
    assert isinstance(settings, GeneratorSettings)
    scaled = objects[("ScaledObject", "acesteps-generator")]
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": generator["metadata"]["name"],
    }
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]

    # What generator/service.py computes from these settings.
    config = _loop_config(GENERATOR_SERVICE, "run_generator")
    names = {"settings": settings, "instance": settings.generator_instance_id}
    assert meta["consumerGroup"] == _evaluate(config["group_id"], GENERATOR_SERVICE, **names)
    assert (meta["topic"],) == _evaluate(config["topics"], GENERATOR_SERVICE, **names)
    assert meta["consumerGroup"] == "acesteps.generator"  # the prefix of acesteps-common
    assert meta["topic"] == "acesteps.requests.v1"
    transactional = _evaluate(config["transactional_id"], GENERATOR_SERVICE, **names)
    assert transactional == "acesteps.generator.acesteps-generator-0"

    # Connected and authenticated as the services are.
    assert meta["bootstrapServers"] == settings.kafka_bootstrap
    assert settings.kafka_sasl_mechanism
    assert meta["sasl"] == KEDA_SASL[settings.kafka_sasl_mechanism]
    ssl = settings.kafka_security_protocol in ("SSL", "SASL_SSL")
    assert meta["tls"] == ("enable" if ssl else "disable")
    reset = re.search(r'auto_offset_reset="(\w+)"', CONSUMING.read_text())
    assert reset and meta["offsetResetPolicy"] == reset[1]
    auth = objects[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    for parameter, variable in (
        ("username", "ACESTEPS_KAFKA_SASL_USERNAME"),
        ("password", "ACESTEPS_KAFKA_SASL_PASSWORD"),
    ):
        ref = env_item(generator, variable)["valueFrom"]["secretKeyRef"]
        assert refs[parameter] == (ref["name"], ref["key"]), parameter

    # Between one generator and one per partition of the requests topic.
    [requests] = [s for s in settings.topic_specs() if s.name == meta["topic"]]
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert scaled["spec"]["maxReplicaCount"] <= requests.partitions
    assert int(meta["lagThreshold"]) >= 1


# ------------------------------------------------------------------ secrets


def test_no_secret_has_a_value(
    objects: dict[tuple[str, str], dict[str, Any]], workloads: dict[str, dict[str, Any]]
) -> None:
    for path in sorted((ROOT / "deploy").rglob("*")):
        if path.is_file():
            assert not re.search(r"0x[0-9a-fA-F]{64}", path.read_text()), f"a key in {path}"
    used = set()
    for (kind, name), doc in objects.items():
        if kind == "Secret":
            assert "data" not in doc, name
            for key, value in doc["stringData"].items():
                # The store URL's example is SQLite: no credentials in it.
                assert value == "" or (
                    key == "ACESTEPS_API_STORE_URL" and value.startswith("sqlite:///")
                ), f"{name}: {key}"
        if kind == "ConfigMap":
            assert not SECRET_NAMES & set(doc["data"]), name
    for name, workload in workloads.items():
        for item in container(workload)["env"]:
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if item["name"] in SECRET_NAMES:
                assert ref and ref["key"] == item["name"], f"{name}: {item['name']}"
            if ref:
                used.add((ref["name"], ref["key"]))
    for ref in objects[("TriggerAuthentication", "acesteps-kafka")]["spec"]["secretTargetRef"]:
        used.add((ref["name"], ref["key"]))
    # The example documents every key that is read, and nothing else.
    example = {(SECRET, key) for key in objects[("Secret", SECRET)]["stringData"]}
    assert {u for u in used if u[0] == SECRET} == example
