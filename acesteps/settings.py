"""Settings shared by every service: the only module of `acesteps` that reads the environment.

Every variable has the prefix ``ACESTEPS_`` (``ACESTEPS_KAFKA_BOOTSTRAP``, ...). The defaults
point at the local stack that ``scripts/stack up`` starts on 127.0.0.1. Each service extends
`CommonSettings` in its own ``settings`` module with what only it needs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from acesteps.deployment import Deployment
from acesteps.kafka.connection import KafkaSecurity
from acesteps.topics import Topics, TopicShape, TopicSpec

if TYPE_CHECKING:
    from acesteps.finality import Finality

__all__ = [
    "CACHE_DIR",
    "ChainSettings",
    "ClientSettings",
    "CommonSettings",
    "ConfigError",
    "load_settings",
]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACESTEPS_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers, comma separated host:port"
    )
    kafka_client_id: str = Field("acesteps", description="client.id sent to the brokers")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how every Kafka client connects (SASL_SSL on managed Kafka)"
    )
    kafka_sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None
    ) = Field(None, description="the SASL mechanism (with a SASL_* protocol)")
    kafka_sasl_username: str | None = Field(None, description="PLAIN or SCRAM user (API key)")
    kafka_sasl_password: SecretStr | None = Field(None, description="its password (API secret)")
    kafka_sasl_oauth_token_file: Path | None = Field(
        None, description="OAUTHBEARER: a file holding the current token, read at each login"
    )
    kafka_sasl_oauth_token_command: str | None = Field(
        None, description="OAUTHBEARER: a command that prints a token, run at each login"
    )
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle (unset: the system's)")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (mTLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="its private key")
    kafka_ssl_check_hostname: bool = Field(True, description="check the brokers' host names")
    kafka_partitions: int = Field(6, ge=1, description="partitions of each topic created")
    kafka_replication_factor: int = Field(
        1, ge=1, description="replicas of each topic created (3 on a production cluster)"
    )
    kafka_min_insync_replicas: int | None = Field(
        None, ge=1, description="min.insync.replicas of each topic created (unset: the broker's)"
    )
    kafka_topics: dict[str, TopicShape] = Field(
        default_factory=dict,
        description=(
            "per topic (requests, audio, tracks, failures, deadletter, progress, checkpoints): "
            '{"audio": {"partitions": 12}}; fields partitions, replication_factor, '
            "min_insync_replicas"
        ),
    )
    topic_prefix: str = Field(
        "acesteps",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="first part of every topic name: PREFIX.requests.v1, ...",
    )
    ipfs_api_url: str = Field("http://127.0.0.1:15001", description="Kubo RPC endpoint")
    ipfs_gateway_url: str = Field("http://127.0.0.1:18080", description="IPFS HTTP gateway")
    ipfs_timeout_s: float = Field(120.0, gt=0, description="timeout of one Kubo RPC call")
    rpc_url: str = Field("http://127.0.0.1:18545", description="Ethereum JSON-RPC endpoint")
    rpc_timeout_s: float = Field(30.0, gt=0, description="timeout of one JSON-RPC call")
    rpc_fallback_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "more JSON-RPC endpoints of the same chain, comma separated: the listener and the "
            "API go on with the next one when a node fails or is rate-limited"
        ),
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: Literal["plain", "json"] = Field(
        "plain", description="plain lines, or one JSON object per line (acesteps.logs)"
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve Prometheus /metrics on this port (off if unset)"
    )
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint binds")
    schema_registry_url: str | None = Field(
        None,
        description=(
            "a Confluent-compatible schema registry (user:password@ for basic auth): values are "
            "written in its wire format under subjects acesteps.<Record>; unset: plain JSON "
            "(docs/topics.md)"
        ),
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator(
        "kafka_sasl_oauth_token_file",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        mode="before",
    )
    @classmethod
    def _no_empty_path(cls, value: object) -> object:
        # An empty variable (a template's `${VAR:-}`) means unset, not the current directory.
        return None if value == "" else value

    @field_validator("rpc_fallback_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @field_validator("rpc_fallback_urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        return [cls._check_url(url) for url in value]

    @field_validator("ipfs_api_url", "ipfs_gateway_url", "rpc_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @model_validator(mode="after")
    def _check_topics(self) -> Self:
        self.topic_specs()  # unknown topic names, min.insync.replicas over the replicas
        self.kafka_security()  # a SASL protocol without its mechanism or credentials, ...
        return self

    def kafka_security(self) -> KafkaSecurity:
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password=self.kafka_sasl_password,
            oauth_token_file=self.kafka_sasl_oauth_token_file,
            oauth_token_command=self.kafka_sasl_oauth_token_command,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_check_hostname=self.kafka_ssl_check_hostname,
        )

    def topic_specs(self) -> list[TopicSpec]:
        """The topics as the settings lay them out (what `ensure_topics` creates and checks)."""
        return self.topics.specs(
            self.kafka_partitions,
            replication_factor=self.kafka_replication_factor,
            min_insync_replicas=self.kafka_min_insync_replicas,
            shapes=self.kafka_topics,
        )

    def with_overrides(self, **changes: object) -> Self:
        """A copy with some fields replaced, validated like the original."""
        return type(self).model_validate({**self.model_dump(), **changes})


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Read settings from the environment; bad configuration exits with a clear message."""
    try:
        return cls()
    except ValidationError as exc:
        lines = [f"invalid configuration ({cls.__name__}):"]
        for err in exc.errors():
            name = "ACESTEPS_" + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}: {err['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def _cache_dir() -> Path:
    """Where downloads, builds and the local stack's state live: ``ACESTEPS_CACHE_DIR``; else
    ``.cache`` of the checkout this package runs from (what ``scripts/`` use); else, for an
    installed package, ``$XDG_CACHE_HOME/acesteps`` (``~/.cache/acesteps``)."""
    if os.environ.get("ACESTEPS_CACHE_DIR"):
        return Path(os.environ["ACESTEPS_CACHE_DIR"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "scripts" / "stack").is_file():
        return checkout / ".cache"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "acesteps"


CACHE_DIR = _cache_dir()


class ChainSettings(CommonSettings):
    """Settings of everything that talks to the contract."""

    contract_address: str | None = Field(
        None,
        pattern=r"^0x[0-9a-fA-F]{40}$",
        description="AceStepsRegistry address; when unset, read from deployment_file",
    )
    deployment_file: Path = Field(
        CACHE_DIR / "run" / "deployment.json",
        description="written by `acesteps contracts deploy`",
    )
    finality_depth: int = Field(
        12, ge=1, le=10_000, description="a block is final this many blocks deep (1: the head)"
    )
    finality_tag: Literal["finalized", "safe"] | None = Field(
        None,
        description="when set, a block is final at or below the node's block of this tag "
        "(Ethereum mainnet and most L2s: finalized), and finality_depth is not used",
    )
    reclaim_after_blocks: int | None = Field(
        None,
        ge=1,
        le=2**64 - 1,
        description="blocks after a request's block from which its requester may reclaim the "
        "fee of a request left unanswered, in registries deployed from here (unset: 7200, "
        "about a day, for `acesteps contracts deploy`; 60 on the local chain of `acesteps up`)",
    )
    private_key: SecretStr | None = Field(None, description="0x-hex signing key")
    keystore_file: Path | None = Field(None, description="encrypted JSON keystore")
    keystore_password: SecretStr | None = None

    def contract(self) -> str:
        """The registry address, from the setting or the deployment file."""
        if self.contract_address:
            return self.contract_address
        try:
            return Deployment.load(self.deployment_file).address
        except (OSError, ValueError) as exc:
            raise ConfigError(
                "no contract address: set ACESTEPS_CONTRACT_ADDRESS or deploy with "
                f"`acesteps contracts deploy` (which writes {self.deployment_file}); {exc}"
            ) from None

    def deployment_block(self, address: str | None = None) -> int | None:
        """The block the registry at ``address`` (default: `contract`) was deployed in, when
        the deployment file describes that contract."""
        deployment = self.deployment(address)
        return deployment.block_number if deployment is not None else None

    def deployment(self, address: str | None = None) -> Deployment | None:
        """The deployment file, when it describes the registry at ``address`` (default:
        `contract`)."""
        try:
            deployment = Deployment.load(self.deployment_file)
            if deployment.address.lower() == (address or self.contract()).lower():
                return deployment
        except (OSError, ValueError, ConfigError):
            pass
        return None

    def finality(self) -> Finality:
        from acesteps.finality import Finality  # web3: only for what talks to the chain

        return Finality(depth=self.finality_depth, tag=self.finality_tag)

    def signing_key(self) -> str:
        """The private key as 0x-hex, from ACESTEPS_PRIVATE_KEY or the keystore file.

        The key never appears in errors or in the settings' repr (SecretStr).
        """
        if self.private_key is not None:
            return self.private_key.get_secret_value()
        if self.keystore_file is None:
            raise ConfigError("no signing key: set ACESTEPS_PRIVATE_KEY or ACESTEPS_KEYSTORE_FILE")
        from eth_account import Account

        password = self.keystore_password.get_secret_value() if self.keystore_password else ""
        try:
            key: bytes = Account.decrypt(self.keystore_file.read_text(), password)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot open keystore {self.keystore_file}: {type(exc).__name__}"
            ) from None
        return "0x" + key.hex()


class ConfigError(Exception):
    """Configuration that validated but cannot be used (a missing file, a wrong password)."""


class ClientSettings(BaseSettings):
    """Settings of the API's command-line client (``acesteps generate``, ``acesteps status``)."""

    model_config = SettingsConfigDict(env_prefix="ACESTEPS_", extra="ignore", frozen=True)

    api_url: str = Field("http://127.0.0.1:18000", description="base URL of the HTTP API")
    api_key: SecretStr | None = Field(None, description="sent as 'Authorization: Bearer <key>'")

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value.rstrip("/")
