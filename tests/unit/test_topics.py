"""Topic layout from the settings: partitions, replication factor, min.insync.replicas, per
topic or for all, and the settings refusing a layout no write could satisfy."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from acesteps.settings import CommonSettings
from acesteps.topics import KINDS


def specs(**settings: object) -> dict[str, tuple[int, int, str | None]]:
    common = CommonSettings(topic_prefix="t", **settings)  # type: ignore[arg-type]
    return {
        s.name.split(".")[1]: (
            s.partitions,
            s.replication_factor,
            s.configs.get("min.insync.replicas"),
        )
        for s in common.topic_specs()
    }


def test_defaults_fit_one_broker() -> None:
    got = specs()
    assert got["requests"] == (6, 1, None) and got["listener"] == (1, 1, None)
    assert len(got) == len(KINDS)


def test_general_settings_and_a_topic_of_its_own() -> None:
    got = specs(
        kafka_partitions=12,
        kafka_replication_factor=3,
        kafka_min_insync_replicas=2,
        kafka_topics={"audio": {"partitions": 24}, "progress": {"replication_factor": 2}},
    )
    assert got["requests"] == (12, 3, "2")
    assert got["audio"] == (24, 3, "2")
    assert got["progress"] == (12, 2, "2")
    assert got["listener"] == (1, 3, "2"), "the checkpoints keep one partition"


def test_a_layout_no_write_could_satisfy_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"min\.insync\.replicas 3 > replication factor 2"):
        specs(kafka_replication_factor=2, kafka_min_insync_replicas=3)
    with pytest.raises(ValidationError, match="unknown topics"):
        specs(kafka_topics={"audios": {"partitions": 2}})
    with pytest.raises(ValidationError):
        specs(kafka_topics={"audio": {"partitions": 0}})


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACESTEPS_KAFKA_TOPICS", '{"tracks": {"partitions": 3}}')
    monkeypatch.setenv("ACESTEPS_KAFKA_REPLICATION_FACTOR", "3")
    assert specs()["tracks"] == (3, 3, None)
