"""Kafka security settings: what every client of the process gets, what is refused, and
secrets kept out of logs. (Against a broker that requires them: not run here yet, as the
local stack's broker speaks PLAINTEXT only.)"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from acesteps.kafka import connection
from acesteps.kafka.admin import _admin
from acesteps.kafka.connection import KafkaSecurity, TokenFromFileOrCommand
from acesteps.kafka.consuming import make_consumer
from acesteps.kafka.producer import idempotent_producer, transactional_producer
from acesteps.settings import CommonSettings
from publisher.chunks import ChunkReader
from tests.unit.test_kafka_loop import make_loop

SECRET = "s3cret-value"


def settings(**values: Any) -> CommonSettings:
    return CommonSettings(**values)


def test_plaintext_adds_nothing() -> None:
    assert settings().kafka_security().options() == {}


def test_sasl_ssl_with_scram() -> None:
    s = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="acesteps",
        kafka_sasl_password=SECRET,
    )
    opts = s.kafka_security().options()
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("acesteps", SECRET)
    context = opts["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert SECRET not in repr(s) and SECRET not in repr(s.kafka_security())


def test_hostname_check_can_be_turned_off_but_not_the_certificate_check() -> None:
    s = settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False)
    context = s.kafka_security().options()["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs a SASL mechanism"),
        ({"kafka_sasl_mechanism": "PLAIN"}, "protocol is PLAINTEXT"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"},
            "needs a username and a password",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER"},
            "token file or a token command",
        ),
        ({"kafka_ssl_certfile": "/c.pem"}, "needs its key"),
        ({"kafka_security_protocol": "TLS"}, "SASL_SSL"),
    ],
)
def test_an_incomplete_security_setting_is_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**values)


async def test_oauth_tokens_from_a_file_or_a_command(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-1\n")
    assert await TokenFromFileOrCommand(file=token_file).token() == "tok-1"
    token_file.write_text("tok-2\n")  # refreshed by a sidecar: read again at the next login
    assert await TokenFromFileOrCommand(file=token_file).token() == "tok-2"
    assert await TokenFromFileOrCommand(command="printf tok-3").token() == "tok-3"
    with pytest.raises(RuntimeError, match="exited 1"):
        await TokenFromFileOrCommand(command="false").token()
    with pytest.raises(RuntimeError, match="empty"):
        await TokenFromFileOrCommand(command="true").token()


async def test_every_client_factory_connects_as_configured() -> None:
    security = KafkaSecurity(
        protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", username="u", password=SecretStr(SECRET)
    )
    connection.configure(security)
    try:
        config = make_loop(None).config
        clients = [
            idempotent_producer("127.0.0.1:1").client,
            transactional_producer("127.0.0.1:1", "t").client,
            make_consumer(config)._client,
            ChunkReader("127.0.0.1:1")._consumer._client,
            _admin("127.0.0.1:1")._client,
        ]
        for client in clients:
            assert client._security_protocol == "SASL_PLAINTEXT"
            assert client._sasl_mechanism == "PLAIN"
            assert client._sasl_plain_password == SECRET
    finally:
        connection.configure(KafkaSecurity())
