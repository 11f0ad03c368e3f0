"""The content policy: named artists' styles, covers and voice cloning are refused with a reason
and a suggested rewording; genre, era and everyday wording are not; the JSON file extends it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acesteps.messages import GenerationRequest
from generator.policy import DEFAULT_RULES, ContentPolicy, PolicyDecision
from generator.settings import GeneratorSettings
from generator.validation import PolicyRefusal

POLICY = ContentPolicy()


@pytest.mark.parametrize(
    ("prompt", "rule", "category"),
    [
        ("upbeat pop in the style of Taylor Swift", "style-of", "artist_style"),
        ("in the style of taylor swift, acoustic", "style-of", "artist_style"),
        ("IN THE STYLE OF TAYLOR SWIFT", "style-of", "artist_style"),
        ("a piece in the style of Nobuo Uematsu", "style-of", "artist_style"),  # unknown name
        ("a song in the vein of Fleetwood Mac", "style-of", "artist_style"),
        ("in the style of The Rolling Stones", "style-of", "artist_style"),
        ("a ballad that sounds like Ed Sheeran", "sounds-like", "artist_style"),
        ("sounds like Queen", "sounds-like", "artist_style"),
        ("synth pop like Taylor Swift", "like-name", "artist_style"),
        ("inspired by Daft Punk, french house", "inspired-by", "artist_style"),
        ("Beatles-esque psychedelic pop", "artist-suffix", "artist_style"),
        ("Drake type beat, dark trap", "artist-suffix", "artist_style"),
        ("a cover of Bohemian Rhapsody", "cover-of", "cover"),
        ("remake of Yesterday by The Beatles", "version-of", "cover"),
        ('a jazz version of "Fly Me to the Moon"', "version-of", "cover"),
        ("do a cover of a famous song", "cover-song", "cover"),
        ("Shape of You by Ed Sheeran", "by-name", "artist_style"),
        ("film music by Hans Zimmer", "work-by", "cover"),
        ("clone the voice of my favourite singer", "voice-cloning", "voice_clone"),
        ("voice cloning of a famous rapper", "voice-cloning", "voice_clone"),
        ("deepfake vocals over trap drums", "voice-cloning", "voice_clone"),
        ("the voice of Freddie Mercury singing opera", "voice-of", "voice_clone"),
        ("sing like Adele, soulful ballad", "sing-like", "voice_clone"),
        ("rap like Kendrick Lamar", "sing-like", "voice_clone"),
        ("Freddie Mercury's voice over a rock band", "artist-voice", "voice_clone"),
        ("pop song featuring Rihanna", "featuring", "voice_clone"),
    ],
)
def test_refusals_name_the_rule_with_a_reason_and_a_suggestion(
    prompt: str, rule: str, category: str
) -> None:
    decision = POLICY.check(prompt)
    assert not decision.allowed
    assert (decision.rule, decision.category, decision.field) == (rule, category, "prompt")
    assert decision.reason and decision.match and decision.match in decision.reason
    assert decision.suggestion and "For example" in decision.suggestion
    assert "content_policy" not in decision.message()  # the worker adds the code
    assert rule in decision.message() and decision.suggestion in decision.message()


@pytest.mark.parametrize(
    ("prompt", "example"),
    [
        ("a cover of Bohemian Rhapsody by Queen", "[genre], [era], [instruments], [mood]"),
        ("a cover of Bohemian Rhapsody by Queen with strings", "with strings, [genre]"),
        ("dreamy synthwave in the style of Taylor Swift, night drive", "dreamy synthwave, night"),
        ("sounds like The Rolling Stones, gritty guitars", "gritty guitars, [genre]"),
    ],
)
def test_the_suggestion_drops_what_only_made_sense_with_the_refused_phrase(
    prompt: str, example: str
) -> None:
    # Not "a by Queen, [genre], ...": the article that led into the phrase and the credit
    # that followed it go with it, and no space is left before a comma.
    suggestion = POLICY.check(prompt).suggestion
    assert suggestion is not None
    assert f'For example: "{example}' in suggestion, suggestion
    assert " ," not in suggestion and "Queen" not in suggestion


def test_the_suggestion_rewords_the_prompt_without_the_named_artist() -> None:
    decision = POLICY.check("upbeat pop in the style of Taylor Swift")
    assert decision.suggestion is not None
    assert '"upbeat pop, [genre], [era], [instruments], [mood]"' in decision.suggestion
    assert "Taylor" not in decision.suggestion
    assert "genre, era, instruments" in decision.suggestion


@pytest.mark.parametrize(
    "prompt",
    [
        "a song about voice and style",
        "jazz in the style of the 1920s",
        "in the style of New Orleans jazz",
        "in the style of New Orleans Jazz",
        "baroque counterpoint in the style of the Renaissance",
        "jazz like the Roaring Twenties",
        "in the style of Motown soul",
        "sounds like Chicago House",
        "like Latin American salsa",
        "lo-fi hip hop like rain on a window",
        "feels like Summer Nights",
        "Epic Orchestral Track Like Thunder Rolling Over Mountains",
        "Upbeat Pop Song With Bright Synths",
        "under the cover of night, dark ambient",
        "1980s synthwave with an album cover vibe",
        "a slow version of the blues",
        "a remix of electronic sounds",
        "a song sung by a choir of children",
        "a voice of an angel, ethereal pop",
        "sing like a bird, folk ballad",
        "a prince and a queen dance, waltz",
        "pink noise ambient",
        "music by the sea",
        "warm, breathy female alto over nylon guitar",
    ],
)
def test_innocent_prompts_are_allowed(prompt: str) -> None:
    decision = POLICY.check(prompt)
    assert decision == PolicyDecision(allowed=True), decision


def test_tags_and_lyrics_are_checked_too() -> None:
    tag = POLICY.check("acoustic pop", tags=["guitar", "Taylor Swift"])
    assert (tag.allowed, tag.rule, tag.field) == (False, "artist-tag", "tags")
    tag_phrase = POLICY.check("acoustic pop", tags=["sounds like Adele"])
    assert (tag_phrase.rule, tag_phrase.field) == ("sounds-like", "tags")
    instruction = POLICY.check("pop", lyrics="[verse: in the style of Adele]\nhello")
    assert (instruction.rule, instruction.field) == ("style-of", "lyrics")
    cloning = POLICY.check("pop", lyrics="[verse]\nclone the voice of my ex")
    assert (cloning.rule, cloning.field) == ("voice-cloning", "lyrics")
    # Sung words may mention a star; only instructions (in brackets) are read as requests.
    assert POLICY.check("rock", lyrics="[verse]\nI wanna sing like Elvis tonight").allowed
    assert POLICY.check("rock", tags=["piano", "Rain"], lyrics="").allowed


def test_check_request_reads_prompt_tags_and_lyrics() -> None:
    request = GenerationRequest(
        request_id="0x" + "00" * 32,
        source="http",
        prompt="chill",
        tags=("Beyoncé",),
        duration_s=5,
        requester="k",
    )
    decision = POLICY.check_request(request)
    assert not decision.allowed and decision.match == "Beyoncé"
    refusal = PolicyRefusal(decision)
    assert refusal.code == "content_policy" and refusal.decision is decision


def test_a_disabled_policy_allows_everything() -> None:
    assert ContentPolicy(enabled=False).check("in the style of Taylor Swift").allowed


def test_the_policy_file_adds_rules_names_and_allow_patterns(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(
        json.dumps(
            {
                "artists": ["Nobody Famous", "Zorblax"],
                "case_sensitive_artists": ["Bread"],
                "style_words": ["zydeco"],
                "allow": [r"in the style of Glenn Miller"],
                "disable": ["like-name"],
                "rules": [
                    {
                        "name": "no-soundalike",
                        "category": "artist_style",
                        "pattern": r"\bsound-?alike\s+of\s+",
                        "subject": "name",
                        "reason": "asks for a sound-alike of a named artist",
                    }
                ],
            }
        )
    )
    policy = ContentPolicy.from_file(path)
    assert policy.check("in the style of zorblax").rule == "style-of"  # extra known name
    assert not policy.check("sounds like Bread").allowed
    assert policy.check("fresh bread and coffee, morning jazz").allowed
    assert policy.check("in the style of Glenn Miller, swing band").allowed  # allow-listed
    assert policy.check("in the style of Louisiana Zydeco").allowed  # extra style word
    assert policy.check("synth pop like Ed Sheeran").rule != "like-name"  # disabled rule
    assert policy.check("a sound-alike of Nobody Famous").rule == "no-soundalike"
    assert len(policy.rules) == len(DEFAULT_RULES)  # one dropped, one added


def test_a_bad_policy_file_fails_at_start_up(tmp_path: Path) -> None:
    for content in (
        {"disable": ["no-such-rule"]},
        {"rules": [{"name": "x", "category": "cover", "pattern": "(", "reason": "r"}]},
        {"unknown_key": 1},
    ):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(content))
        with pytest.raises(Exception):  # noqa: B017 - ValueError, re.error or ValidationError
            ContentPolicy.from_file(path)


def test_settings_point_at_the_policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.json"
    path.write_text("{}")
    monkeypatch.setenv("ACESTEPS_GENERATOR_POLICY_FILE", str(path))
    settings = GeneratorSettings()
    assert settings.generator_policy_file == path
    policy = ContentPolicy.from_file(
        settings.generator_policy_file, enabled=settings.generator_policy_enabled
    )
    assert not policy.check("in the style of Taylor Swift").allowed
