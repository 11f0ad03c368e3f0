"""Musical controls per request (bpm, key, time signature, vocal language, instrumental): what
a request may say, how it reaches the model's text, and that it changes the bytes only when
it is set, through the real pipeline with the tiny checkpoint."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from acesteps.messages import GenerationRequest
from acesteps.musical import KEYS, canonical_key
from acesteps.options import GenerationOptions
from generator.jobs import INSTRUMENTAL, Job
from generator.model import Model
from generator.pipeline import pcm_keccak256
from generator.reproduce import reproduce
from generator.settings import GeneratorSettings
from tests.unit.generator_fixtures import made, tiny_dir, tiny_model, tiny_settings

__all__ = ["tiny_dir", "tiny_model", "tiny_settings"]

CONTROLS = {"bpm": 96, "key": "f# MINOR", "time_signature": 3, "vocal_language": "fr"}


def _request(**changes: object) -> GenerationRequest:
    fields: dict[str, object] = {
        "request_id": "0x" + "cd" * 32,
        "source": "http",
        "requester": "key-1",
        "prompt": "a waltz for strings",
        "lyrics": "[verse]\nla nuit tombe",
        "duration_s": 5,
        "seed": 7,
    }
    return GenerationRequest.model_validate(fields | changes)


# ------------------------------------------------------------------ what a request may say


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("C major", "C major"),
        ("f# MINOR", "F# minor"),
        ("Bb maj", "Bb major"),
        ("E♭ min", "Eb minor"),
    ],
)
def test_keys_are_stored_in_one_spelling(written: str, canonical: str) -> None:
    assert canonical_key(written) == canonical
    assert canonical in KEYS
    assert GenerationOptions(prompt="x", key=written).key == canonical


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("bpm", 29, "greater than or equal to 30"),
        ("bpm", 301, "less than or equal to 300"),
        ("bpm", True, "must be an integer"),
        ("key", "H major", "unknown key"),
        ("key", "C dorian", "unknown key"),
        ("time_signature", 5, "2, 3, 4 or 6"),
        ("vocal_language", "klingon", "'en'"),
    ],
)
def test_out_of_range_controls_are_refused_naming_the_field(
    field: str, value: object, says: str
) -> None:
    with pytest.raises(ValidationError, match=field) as caught:
        GenerationOptions.model_validate({"prompt": "x", field: value})
    assert says in str(caught.value)


def test_an_instrumental_request_carries_no_lyrics() -> None:
    with pytest.raises(ValidationError, match="instrumental request carries no lyrics"):
        GenerationOptions(prompt="x", instrumental=True, lyrics="la la")
    job = Job.from_request(_request(lyrics="", instrumental=True))
    assert job.lyrics == INSTRUMENTAL


def test_controls_not_asked_are_left_out_of_the_record() -> None:
    # Records and manifests of requests without controls keep their bytes.
    plain = _request().model_dump(mode="json")
    assert not {"bpm", "key", "time_signature", "vocal_language", "instrumental"} & set(plain)
    asked = _request(**CONTROLS).model_dump(mode="json")
    assert asked["key"] == "F# minor" and asked["bpm"] == 96


# ------------------------------------------------------------------ to the model


def test_the_controls_condition_the_pipeline_call() -> None:
    assert Job.from_request(_request()).conditioning == ()
    job = Job.from_request(_request(**CONTROLS))
    assert dict(job.conditioning) == {
        "bpm": 96,
        "keyscale": "F# minor",
        "timesignature": "3",
        "vocal_language": "fr",
    }


def test_the_model_reads_them_in_its_text(tiny_model: Model) -> None:
    text, lyrics = tiny_model.formatted_inputs(Job.from_request(_request(**CONTROLS)))
    assert "- bpm: 96\n" in text and "- keyscale: F# minor\n" in text
    assert "- timesignature: 3\n" in text
    assert lyrics.startswith("# Languages\nfr\n")
    text, lyrics = tiny_model.formatted_inputs(Job.from_request(_request()))
    assert "- bpm: N/A\n" in text and "- keyscale: N/A\n" in text
    assert lyrics.startswith(f"# Languages\n{tiny_model.settings.generator_vocal_language}\n")


def test_each_control_changes_the_audio_and_the_same_request_gives_the_same_bytes(
    tiny_model: Model,
) -> None:
    def pcm(**controls: object) -> str:
        (raw,) = tiny_model.generate([Job.from_request(_request(**controls))])
        return pcm_keccak256(raw)

    plain = pcm()
    variants = {name: pcm(**{name: value}) for name, value in CONTROLS.items()}
    assert all(h != plain for h in variants.values()), variants
    assert len(set(variants.values())) == len(variants)
    assert pcm(bpm=96) == variants["bpm"]  # deterministic
    assert pcm(key="F# minor") == variants["key"]  # one spelling, one sound


def test_jobs_with_other_controls_never_share_a_pipeline_call(
    tiny_settings: GeneratorSettings, tiny_model: Model
) -> None:
    batched = tiny_model.with_settings(tiny_settings.with_overrides(generator_batch_mode="batched"))
    jobs = [Job.from_request(_request(**c)) for c in ({}, {"bpm": 96}, {}, {"bpm": 96})]
    groups = batched.plan(jobs)
    assert sorted(sorted(g) for g in groups) == [[0, 2], [1, 3]]


def test_the_manifest_records_the_controls_and_reproduces_the_track(
    tiny_model: Model, tiny_settings: GeneratorSettings
) -> None:
    request = _request(format="wav", **CONTROLS)
    manifest, _ = made(tiny_model, request, Job.from_request(request))
    assert manifest.request.options.key == "F# minor"
    assert manifest.job.conditioning["keyscale"] == "F# minor"
    assert manifest.sampling.vocal_language == "fr"
    assert "- bpm: 96" in manifest.model_input.text
    outcome = reproduce(manifest, tiny_settings)
    assert outcome.status == "REPRODUCED", outcome
