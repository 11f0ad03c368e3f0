"""Topic names and their configurations.

| topic                              | key                  | value                      |
|------------------------------------|----------------------|----------------------------|
| PREFIX.requests.v1                 | requestId            | GenerationRequest          |
| PREFIX.audio.v1                    | requestId            | audio chunks, AudioReady   |
| PREFIX.tracks.v1                   | requestId            | TrackPublished             |
| PREFIX.failures.v1                 | requestId            | GenerationFailed, GenerationCanceled |
| PREFIX.cancels.v1                  | requestId            | CancelRequested            |
| PREFIX.progress.v1                 | requestId            | GenerationProgress         |
| PREFIX.listener.checkpoints        | chain id + contract  | ListenerCheckpoint         |
| PREFIX.deadletter.v1               | the original key     | a poison record, verbatim  |

``PREFIX.deadletter.v1`` holds records that carry no usable request id (so they cannot
become a `GenerationFailed` on ``PREFIX.failures.v1``): key, value and headers unchanged,
plus ``dlq-*`` headers naming the source topic, partition, offset, stage and error.

``PREFIX.progress.v1`` is advisory: workers announce there, outside their transactions, that
they started generating or publishing a request, so that the status can say so while the
work runs. A record may repeat (a retried request) or be lost; the other topics are the truth.

``PREFIX.cancels.v1`` is compacted (one record per request matters) and kept a week: every
generator and publisher reads it whole, to stop the requests it names before their work.

The prefix is ``acesteps`` in production; tests give each test its own.

Partitions, replication factor and ``min.insync.replicas`` come from the settings
(``ACESTEPS_KAFKA_PARTITIONS``, ``ACESTEPS_KAFKA_REPLICATION_FACTOR``,
``ACESTEPS_KAFKA_MIN_INSYNC_REPLICAS``, and per topic ``ACESTEPS_KAFKA_TOPICS``, keyed by the
short names of `KINDS`); the checkpoints topic keeps one partition unless a shape says more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["KINDS", "TopicShape", "TopicSpec", "Topics"]

KINDS = (
    "requests",
    "audio",
    "tracks",
    "failures",
    "deadletter",
    "progress",
    "cancels",
    "checkpoints",
)
"""The topics' short names, as the settings name them."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str]
    replication_factor: int = 1


@dataclass(frozen=True)
class TopicShape:
    """How one topic is laid out on the cluster; None: the general setting."""

    partitions: int | None = None
    replication_factor: int | None = None
    min_insync_replicas: int | None = None

    def __post_init__(self) -> None:
        values = (self.partitions, self.replication_factor, self.min_insync_replicas)
        if any(v is not None and v < 1 for v in values):
            raise ValueError(f"a topic's partitions and replicas are at least 1: {self}")


@dataclass(frozen=True)
class Topics:
    prefix: str = "acesteps"

    @property
    def requests(self) -> str:
        return f"{self.prefix}.requests.v1"

    @property
    def audio(self) -> str:
        return f"{self.prefix}.audio.v1"

    @property
    def tracks(self) -> str:
        return f"{self.prefix}.tracks.v1"

    @property
    def failures(self) -> str:
        return f"{self.prefix}.failures.v1"

    @property
    def progress(self) -> str:
        return f"{self.prefix}.progress.v1"

    @property
    def cancels(self) -> str:
        return f"{self.prefix}.cancels.v1"

    @property
    def checkpoints(self) -> str:
        return f"{self.prefix}.listener.checkpoints"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter.v1"

    def specs(
        self,
        partitions: int = 6,
        *,
        replication_factor: int = 1,
        min_insync_replicas: int | None = None,
        shapes: Mapping[str, TopicShape] | None = None,
    ) -> list[TopicSpec]:
        """Every topic with the configs it needs, laid out as asked (`TopicShape` per kind).

        Records stay below 1 MiB (audio chunks are at most 512 KiB), so the broker's default
        ``max.message.bytes`` is enough and the topics work on any managed Kafka.
        """
        shapes = shapes or {}
        unknown = sorted(set(shapes) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown topics {unknown}; known: {', '.join(KINDS)}")
        keep_week = {"retention.ms": str(7 * 24 * 3600 * 1000)}
        wanted: dict[str, tuple[str, int, dict[str, str]]] = {
            "requests": (self.requests, partitions, dict(keep_week)),
            # Audio is bulky and only needed until the publisher has pinned it.
            "audio": (self.audio, partitions, {"retention.ms": str(3 * 24 * 3600 * 1000)}),
            "tracks": (self.tracks, partitions, {"retention.ms": "-1"}),
            "failures": (self.failures, partitions, {"retention.ms": "-1"}),
            "deadletter": (self.deadletter, partitions, {"retention.ms": "-1"}),
            # Only useful while a request runs.
            "progress": (self.progress, partitions, {"retention.ms": str(24 * 3600 * 1000)}),
            # One record per request matters, and only while it may still run.
            "cancels": (
                self.cancels,
                partitions,
                {"cleanup.policy": "compact,delete", **keep_week},
            ),
            # One record per (chain, contract); only the latest matters.
            "checkpoints": (
                self.checkpoints,
                1,
                {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
            ),
        }
        specs = []
        for kind, (name, count, configs) in wanted.items():
            shape = shapes.get(kind, TopicShape())
            factor = shape.replication_factor or replication_factor
            insync = shape.min_insync_replicas or min_insync_replicas
            if insync is not None:
                if insync > factor:
                    raise ValueError(
                        f"{name}: min.insync.replicas {insync} > replication factor {factor}: "
                        "no write with acks=all could ever succeed"
                    )
                configs["min.insync.replicas"] = str(insync)
            specs.append(TopicSpec(name, shape.partitions or count, configs, factor))
        return specs
