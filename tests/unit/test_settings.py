"""Settings come from ACESTEPS_* variables; bad values stop with a message naming them."""

from __future__ import annotations

import pytest

from acesteps.settings import CommonSettings, load_settings


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP", "IPFS_API_URL", "RPC_URL", "TOPIC_PREFIX"):
        monkeypatch.delenv(f"ACESTEPS_{name}", raising=False)
    s = CommonSettings()
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.topics.requests == "acesteps.requests.v1"
    assert s.topics.checkpoints == "acesteps.listener.checkpoints"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACESTEPS_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("ACESTEPS_TOPIC_PREFIX", "staging")
    monkeypatch.setenv("ACESTEPS_RPC_URL", "https://rpc.example/")
    s = CommonSettings()
    assert s.kafka_bootstrap == "k1:9092,k2:9092"
    assert s.topics.audio == "staging.audio.v1"
    assert s.rpc_url == "https://rpc.example"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAFKA_BOOTSTRAP", "no-port"),
        ("TOPIC_PREFIX", "bad prefix!"),
        ("IPFS_API_URL", "ftp://x"),
        ("IPFS_TIMEOUT_S", "-1"),
    ],
)
def test_bad_configuration_exits_with_the_variable_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(f"ACESTEPS_{name}", value)
    with pytest.raises(SystemExit) as exc:
        load_settings(CommonSettings)
    assert exc.value.code == 2
    assert f"ACESTEPS_{name}" in capsys.readouterr().err


def test_topic_specs_compact_only_the_checkpoints_and_cancels() -> None:
    specs = {s.name: s for s in CommonSettings(topic_prefix="x").topics.specs()}
    assert specs["x.listener.checkpoints"].configs["cleanup.policy"] == "compact"
    assert specs["x.listener.checkpoints"].partitions == 1
    # Cancels: one record per request matters, and only for as long as requests are kept.
    assert specs["x.cancels.v1"].configs["cleanup.policy"] == "compact,delete"
    assert specs["x.cancels.v1"].configs["retention.ms"] == str(7 * 24 * 3600 * 1000)
    compacted = {"x.listener.checkpoints", "x.cancels.v1"}
    others = [s for n, s in specs.items() if n not in compacted]
    assert all("cleanup.policy" not in s.configs for s in others)
    assert len(specs) == 8
    assert specs["x.progress.v1"].configs["retention.ms"] == str(24 * 3600 * 1000)
    assert specs["x.deadletter.v1"].configs["retention.ms"] == "-1"


def test_an_empty_kafka_file_setting_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACESTEPS_KAFKA_SSL_CAFILE", "")
    monkeypatch.setenv("ACESTEPS_KAFKA_SASL_OAUTH_TOKEN_FILE", "")
    settings = CommonSettings()
    assert settings.kafka_ssl_cafile is None and settings.kafka_sasl_oauth_token_file is None


def test_cors_origins_are_a_list_of_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    from listener.settings import ListenerSettings

    monkeypatch.setenv("ACESTEPS_API_CORS_ORIGINS", "https://a.example, http://localhost:5173")
    assert ListenerSettings().api_cors_origins == ["https://a.example", "http://localhost:5173"]
    monkeypatch.setenv("ACESTEPS_API_CORS_ORIGINS", "https://a.example/path")
    with pytest.raises(ValueError, match="scheme://host"):
        ListenerSettings()
