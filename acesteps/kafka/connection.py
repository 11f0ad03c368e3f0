"""How every Kafka client of a process connects: security protocol, SASL, TLS.

Managed Kafka (Confluent Cloud, Amazon MSK, Aiven, ...) needs ``SASL_SSL`` or ``SSL``. The
settings (``ACESTEPS_KAFKA_SECURITY_PROTOCOL``, ``ACESTEPS_KAFKA_SASL_*``,
``ACESTEPS_KAFKA_SSL_*``, see `acesteps.settings`) become a `KafkaSecurity`; a service sets it
once at start-up (`configure`, from `acesteps.service.main`) and every client factory of this
package adds `options()` to its own: producers, the loops' consumers, the chunk lookup, the
checkpoint read, the API's projection, the admin client. One place, so that no client is left
on PLAINTEXT. Secrets stay `SecretStr` until they are handed to aiokafka, and are never
logged.
"""

from __future__ import annotations

import asyncio
import shlex
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

__all__ = ["KafkaSecurity", "TokenFromFileOrCommand", "configure", "options"]

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class TokenFromFileOrCommand(AbstractTokenProvider):  # type: ignore[misc]
    """An OAUTHBEARER token, read again for every (re)authentication: the file's content (a
    sidecar refreshes it) or a command's output (a cloud CLI that prints one)."""

    def __init__(self, file: Path | None = None, command: str | None = None) -> None:
        if (file is None) == (command is None):
            raise ValueError("an OAUTHBEARER token comes from a file or a command (one of them)")
        self.file, self.command = file, command

    async def token(self) -> str:
        if self.file is not None:
            text = await asyncio.to_thread(self.file.read_text)
        else:
            assert self.command is not None
            proc = await asyncio.create_subprocess_exec(
                *shlex.split(self.command),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(
                    f"the token command exited {proc.returncode}: {err.decode()[-300:]}"
                )
            text = out.decode()
        token = text.strip()
        if not token:
            raise RuntimeError("the OAUTHBEARER token is empty")
        return token


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: Mechanism | None = None
    username: str | None = None
    password: SecretStr | None = None
    oauth_token_file: Path | None = None
    oauth_token_command: str | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        sasl = self.protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(f"{self.protocol} needs a SASL mechanism")
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(f"a SASL mechanism is set, but the protocol is {self.protocol}")
        if self.sasl_mechanism == "OAUTHBEARER":
            if (self.oauth_token_file is None) == (self.oauth_token_command is None):
                raise ValueError("OAUTHBEARER needs a token file or a token command (one)")
        elif sasl and (not self.username or self.password is None):
            raise ValueError(f"{self.sasl_mechanism} needs a username and a password")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")

    def options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for this security (none for PLAINTEXT)."""
        if self.protocol == "PLAINTEXT":
            return {}
        opts: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            opts["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism == "OAUTHBEARER":
            opts["sasl_mechanism"] = "OAUTHBEARER"
            opts["sasl_oauth_token_provider"] = TokenFromFileOrCommand(
                self.oauth_token_file, self.oauth_token_command
            )
        elif self.sasl_mechanism is not None:
            assert self.password is not None
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.username
            opts["sasl_plain_password"] = self.password.get_secret_value()
        return opts

    def ssl_context(self) -> ssl.SSLContext:
        """The system's CAs, or ``ssl_cafile``; the client certificate when one is given."""
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
            keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
        )
        context.check_hostname = self.ssl_check_hostname
        return context


_security = KafkaSecurity()


def configure(security: KafkaSecurity) -> None:
    """Set how this process's Kafka clients connect (once, at start-up)."""
    global _security
    _security = security


def options() -> dict[str, Any]:
    return _security.options()
