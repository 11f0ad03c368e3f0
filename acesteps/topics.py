"""Topic names and their configurations.

| topic                              | key                  | value                      |
|------------------------------------|----------------------|----------------------------|
| PREFIX.requests.v1                 | requestId            | GenerationRequest          |
| PREFIX.audio.v1                    | requestId            | audio chunks, AudioReady   |
| PREFIX.tracks.v1                   | requestId            | TrackPublished             |
| PREFIX.failures.v1                 | requestId            | GenerationFailed           |
| PREFIX.progress.v1                 | requestId            | GenerationProgress         |
| PREFIX.listener.checkpoints        | chain id + contract  | ListenerCheckpoint         |
| PREFIX.deadletter.v1               | the original key     | a poison record, verbatim  |

``PREFIX.deadletter.v1`` holds records that carry no usable request id (so they cannot
become a `GenerationFailed` on ``PREFIX.failures.v1``): key, value and headers unchanged,
plus ``dlq-*`` headers naming the source topic, partition, offset, stage and error.

``PREFIX.progress.v1`` is advisory: workers announce there, outside their transactions, that
they started generating or publishing a request, so that the status can say so while the
work runs. A record may repeat (a retried request) or be lost; the other topics are the truth.

The prefix is ``acesteps`` in production; tests give each test its own.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TopicSpec", "Topics"]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str]


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
    def checkpoints(self) -> str:
        return f"{self.prefix}.listener.checkpoints"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter.v1"

    def specs(self, partitions: int = 6) -> list[TopicSpec]:
        """Every topic with the configs it needs.

        Records stay below 1 MiB (audio chunks are at most 512 KiB), so the broker's default
        ``max.message.bytes`` is enough and the topics work on any managed Kafka.
        """
        keep_week = {"retention.ms": str(7 * 24 * 3600 * 1000)}
        return [
            TopicSpec(self.requests, partitions, dict(keep_week)),
            # Audio is bulky and only needed until the publisher has pinned it.
            TopicSpec(self.audio, partitions, {"retention.ms": str(3 * 24 * 3600 * 1000)}),
            TopicSpec(self.tracks, partitions, {"retention.ms": "-1"}),
            TopicSpec(self.failures, partitions, {"retention.ms": "-1"}),
            TopicSpec(self.deadletter, partitions, {"retention.ms": "-1"}),
            # Only useful while a request runs.
            TopicSpec(self.progress, partitions, {"retention.ms": str(24 * 3600 * 1000)}),
            # One record per (chain, contract); only the latest matters.
            TopicSpec(
                self.checkpoints,
                1,
                {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
            ),
        ]
