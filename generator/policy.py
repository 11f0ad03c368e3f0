"""The content policy: refuse requests for a named artist's style, covers, or voice cloning.

Checked before any GPU work. `ContentPolicy.check` returns a
`PolicyDecision`; the worker turns a refusal into a ``GenerationFailed`` with code
``content_policy`` (see `PolicyDecision.message` and `generator.errors.ContentPolicyRefused`).

How a rule matches: a *trigger* regex (case-insensitive) finds a phrase such as "in the style
of", "cover of" or "the voice of"; then the words right after it must be a *subject* of the
rule's kind:

- ``any``: nothing more is needed ("clone the voice", "voice cloning", "cover song");
- ``name``: a known artist (`generator.policy_data`, plus the policy file), or a run of two or
  more capitalized words that are not all genre/era/place words ("Taylor Swift", "The Rolling
  Stones" - but not "New Orleans Jazz" or "the 1920s");
- ``work``: a ``name``, a quoted title, "the song/track/...", or one capitalized word that is
  not a genre/era/place word ("cover of Yesterday" - but not "cover of night").

Three more rules need no trigger: a known artist with a suffix ("Beatles-esque", "Drake type
beat"), a name followed by "'s voice/vocals", and a tag that is exactly a known artist.

Fields: the prompt and every tag get all rules. Lyrics are sung text, so mentioning a star
there is not a request; lyrics get only the ``any`` rules, plus all rules inside their
bracketed instructions (``[verse: in the style of Adele]``).

The rule set is data: `DEFAULT_RULES` below, extended or trimmed by a JSON file
(``ACESTEPS_GENERATOR_POLICY_FILE``; format in ``docs/content-policy.md``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from acesteps.messages import GenerationRequest
from generator.policy_data import CASE_SENSITIVE_ARTISTS, KNOWN_ARTISTS, NAME_PARTICLES, STYLE_WORDS

__all__ = ["DEFAULT_RULES", "ContentPolicy", "PolicyDecision", "PolicyFile", "Rule"]

Category = Literal["artist_style", "cover", "voice_clone", "other"]
Subject = Literal["any", "name", "work"]
FieldName = Literal["prompt", "tags", "lyrics"]

ADVICE: Final[dict[str, str]] = {
    "artist_style": (
        "Describe the sound instead of naming an artist: genre, era, instruments, tempo, "
        "vocal character and mood."
    ),
    "cover": (
        "Ask for an original piece: describe its genre, mood and instrumentation, and write "
        "your own lyrics rather than naming an existing song."
    ),
    "voice_clone": (
        "Describe the voice you want (e.g. 'warm, breathy female alto' or 'gritty male "
        "baritone') rather than a real person's voice."
    ),
    "other": "Rephrase the request without the flagged part.",
}
_PLACEHOLDERS: Final = "[genre], [era], [instruments], [mood]"


@dataclass(frozen=True)
class Rule:
    """A trigger phrase, the kind of subject that must follow it, and what to tell the user."""

    name: str
    category: Category
    pattern: str
    subject: Subject = "name"
    reason: str = ""

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE)


@dataclass(frozen=True)
class PolicyDecision:
    """The verdict on one request; for a refusal, which rule, why, and what to ask instead."""

    allowed: bool
    rule: str | None = None
    category: Category | None = None
    reason: str | None = None
    suggestion: str | None = None
    field: FieldName | None = None
    match: str | None = None

    def message(self) -> str:
        """The text for ``GenerationFailed.message``."""
        if self.allowed:
            return "allowed"
        return f"refused by content policy rule {self.rule!r} ({self.field}): {self.reason} " + (
            f"Suggestion: {self.suggestion}"
        )


ALLOWED: Final = PolicyDecision(allowed=True)

_STYLE_REASON = "asks for the style of a named artist"
_COVER_REASON = "asks for a cover or a version of an existing song"
_VOICE_REASON = "asks to clone or imitate a real person's voice"

DEFAULT_RULES: Final[tuple[Rule, ...]] = (
    # --- voice cloning (most specific first)
    Rule(
        "voice-cloning",
        "voice_clone",
        r"\b(?:clon(?:e|ed|es|ing)\s+(?:(?:the|a|an|his|her|their|my|your|this|that)\s+)?"
        r"(?:\w+(?:['\u2019]s)?\s+)?voices?|voice[-\s]?clon(?:e|ed|es|ing)|voice\s+(?:swap|"
        r"conversion|transfer)|deep[-\s]?fakes?|sound[-\s]?alikes?|impersonat(?:e|es|ed|ing|"
        r"ion|ions|or))\b",
        "any",
        _VOICE_REASON,
    ),
    Rule(
        "voice-of",
        "voice_clone",
        r"\b(?:voice|vocals?|singing\s+voice|timbre|vocal\s+style)\s+of\s+",
        "name",
        _VOICE_REASON,
    ),
    Rule(
        "sing-like",
        "voice_clone",
        r"\b(?:sings?|singing|sung|raps?|rapping|rapped|vocals?)\s+(?:just\s+|exactly\s+)?like\s+",
        "name",
        _VOICE_REASON,
    ),
    Rule(
        "sung-by",
        "voice_clone",
        r"\b(?:sung|voiced|rapped|vocals?|singing)\s+by\s+",
        "name",
        _VOICE_REASON,
    ),
    Rule(
        "featuring",
        "voice_clone",
        r"(?:\bfeat\.|\bft\.|\bfeaturing\b|\bduet\s+with\b)\s*",
        "name",
        _VOICE_REASON,
    ),
    # --- covers and existing works
    Rule(
        "cover-song",
        "cover",
        r"\b(?:cover\s+(?:song|version|track)s?|(?:do|make|record|play|sing|perform|create|"
        r"produce)\s+(?:a|an|my|our)\s+(?:\w+\s+)?cover)\b",
        "any",
        _COVER_REASON,
    ),
    Rule("cover-of", "cover", r"(?<!album\s)(?<!book\s)\bcover\s+of\s+", "work", _COVER_REASON),
    Rule(
        "version-of",
        "cover",
        r"\b(?:remake|remix|rendition|re-?recording|reinterpretation|re-?imagining|karaoke|"
        r"version|parody|medley|mashup)\s+of\s+",
        "work",
        _COVER_REASON,
    ),
    Rule(
        "work-by",
        "cover",
        r"\b(?:song|songs|track|tracks|hit|hits|single|tune|album|record|music|ballad)\s+by\s+|"
        r"[\"\u201c][^\"\u201d]{1,80}[\"\u201d]\s+by\s+",
        "name",
        "names an existing work or its artist",
    ),
    # --- a named artist's style
    Rule(
        "style-of",
        "artist_style",
        r"\b(?:in\s+the\s+(?:musical\s+)?(?:style|vein|manner|spirit|mou?ld|footsteps)\s+of|"
        r"(?:styled?|modell?ed|patterned)\s+(?:after|on)|style\s+of|signature\s+sound\s+of)\s+",
        "name",
        _STYLE_REASON,
    ),
    Rule(
        "sounds-like",
        "artist_style",
        r"\b(?:sounds?|sounding)\s+(?:just\s+|exactly\s+|a\s+lot\s+|a\s+bit\s+)?like\s+",
        "name",
        _STYLE_REASON,
    ),
    Rule(
        "inspired-by",
        "artist_style",
        r"\b(?:inspired|influenced)\s+by\s+|\b(?:à|a)\s+la\s+|\breminiscent\s+of\s+|"
        r"\bsimilar\s+to\s+|\b(?:homage|tribute)\s+to\s+|\b(?:imitat(?:e|ing)|mimic(?:king)?|"
        r"channel(?:l?ing)?|copy(?:ing)?|emulat(?:e|ing))\s+",
        "name",
        _STYLE_REASON,
    ),
    Rule("like-name", "artist_style", r"\blike\s+", "name", _STYLE_REASON),
    Rule("by-name", "artist_style", r"\bby\s+", "name", _STYLE_REASON),
)


class RuleSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    category: Category
    pattern: str = Field(min_length=1, max_length=2000)
    subject: Subject = "name"
    reason: str = Field(min_length=1, max_length=300)


class PolicyFile(BaseModel):
    """The optional JSON file that extends the default rule set."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    artists: tuple[str, ...] = ()
    case_sensitive_artists: tuple[str, ...] = ()
    style_words: tuple[str, ...] = ()
    allow: tuple[str, ...] = Field(default=(), description="regexes of phrases never refused")
    disable: tuple[str, ...] = Field(default=(), description="names of default rules to drop")
    rules: tuple[RuleSpec, ...] = ()


def _alternation(names: Iterable[str]) -> str:
    unique = sorted({n.strip() for n in names if n.strip()}, key=len, reverse=True)
    # A name ends where the next character is not part of a word: "Adele's" matches Adele.
    return "(?:" + "|".join(re.escape(n) for n in unique) + r")(?![\w])" if unique else "(?!)"


_WORD = re.compile(r"[^\s,;:!?()\[\]{}\"\u201c\u201d/]+")
_BRACKETS = re.compile(r"\[[^\]]*\]|\([^)]*\)")


class ContentPolicy:
    """A compiled rule set. Pure and thread-safe; build once per worker."""

    def __init__(
        self,
        rules: Sequence[Rule] = DEFAULT_RULES,
        *,
        artists: Iterable[str] = KNOWN_ARTISTS,
        case_sensitive_artists: Iterable[str] = CASE_SENSITIVE_ARTISTS,
        style_words: Iterable[str] = STYLE_WORDS,
        allow: Iterable[str] = (),
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.rules = tuple(rules)
        self._compiled = [(rule, rule.compiled()) for rule in self.rules]
        self._style_words = frozenset(w.casefold() for w in style_words)
        known = _alternation(artists)
        exact = _alternation(case_sensitive_artists)
        self._known_at = re.compile(rf"(?i:{known})|{exact}")
        self._suffix = re.compile(
            rf"(?:(?<![\w])(?i:{known})|(?<![\w]){exact})['\u2019]?s?[-\s](?i:style|esque|like|"
            r"inspired|type\s+beats?|type)\b"
        )
        self._possessive = re.compile(
            rf"(?P<subject>(?<![\w])(?i:{known})|(?<![\w]){exact}|"
            r"(?<![\w])[A-Z][\w.\-]*(?:\s+(?:[A-Z][\w.\-]*|&|and|of|the|de|van|von)){0,4}\s+"
            r"[A-Z][\w.\-]*)['\u2019]s\s+(?:singing\s+)?(?:voice|vocals?|timbre|singing)\b"
        )
        self._tag_exact = re.compile(rf"^\s*(?:(?i:{known})|{exact})\s*$")
        self._allow = [re.compile(p, re.IGNORECASE) for p in allow]

    # -------------------------------------------------------------- construction

    @classmethod
    def from_file(cls, path: Path | None, *, enabled: bool = True) -> ContentPolicy:
        """The defaults, extended by the JSON policy file when one is given."""
        if path is None:
            return cls(enabled=enabled)
        spec = PolicyFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
        unknown = set(spec.disable) - {r.name for r in DEFAULT_RULES}
        if unknown:
            raise ValueError(f"{path}: 'disable' names no default rule: {sorted(unknown)}")
        rules = [r for r in DEFAULT_RULES if r.name not in spec.disable]
        extra = [Rule(s.name, s.category, s.pattern, s.subject, s.reason) for s in spec.rules]
        for rule in extra:
            rule.compiled()  # a bad regex fails at start-up, not on the first request
        for pattern in spec.allow:
            re.compile(pattern)
        # Operators' rules come first: they are the more specific ones.
        return cls(
            [*extra, *rules],
            artists=(*KNOWN_ARTISTS, *spec.artists),
            case_sensitive_artists=(*CASE_SENSITIVE_ARTISTS, *spec.case_sensitive_artists),
            style_words=STYLE_WORDS | {w.casefold() for w in spec.style_words},
            allow=spec.allow,
            enabled=enabled,
        )

    # -------------------------------------------------------------- checking

    def check_request(self, request: GenerationRequest) -> PolicyDecision:
        return self.check(request.prompt, request.lyrics, request.tags)

    def check(self, prompt: str, lyrics: str = "", tags: Sequence[str] = ()) -> PolicyDecision:
        """The first refusal found in the prompt, the tags, then the lyrics; else allowed."""
        if not self.enabled:
            return ALLOWED
        # 1. The prompt: every rule.
        decision = self._check_text(prompt, "prompt", all_rules=True)
        # 2. Each tag: a bare artist name, then every rule.
        for tag in tags:
            if not decision.allowed:
                break
            if self._tag_exact.match(self._blank_allowed(tag)):
                return self._refuse(ARTIST_TAG_RULE, "tags", tag.strip(), tag)
            decision = self._check_text(tag, "tags", all_rules=True)
        # 3. The lyrics: the unconditional rules on the sung text, every rule in brackets.
        if decision.allowed:
            decision = self._check_text(lyrics, "lyrics", all_rules=False)
        for instruction in _BRACKETS.findall(lyrics):
            if not decision.allowed:
                break
            decision = self._check_text(instruction, "lyrics", all_rules=True)
        return decision

    def _check_text(self, text: str, field: FieldName, *, all_rules: bool) -> PolicyDecision:
        if not text.strip():
            return ALLOWED
        scan = self._blank_allowed(text)
        # In Title Case or ALL CAPS text capitals say nothing about names: known names only.
        guess_names = not _mostly_capitalized(scan)
        for rule, pattern in self._compiled:
            if not all_rules and rule.subject != "any":
                continue
            for trigger in pattern.finditer(scan):
                end = self._subject_end(scan, trigger.end(), rule.subject, guess_names)
                if end is not None:
                    span = text[trigger.start() : end].strip()
                    return self._refuse(rule, field, span, text, trigger.start(), end)
        if all_rules:
            for rule, pattern in ((SUFFIX_RULE, self._suffix), (POSSESSIVE_RULE, self._possessive)):
                found = pattern.search(scan)
                if found and (guess_names or self._known_at.search(found.group(0))):
                    return self._refuse(
                        rule, field, found.group(0), text, found.start(), found.end()
                    )
        return ALLOWED

    def _blank_allowed(self, text: str) -> str:
        """``text`` with every allow-listed phrase replaced by spaces (offsets unchanged)."""
        for pattern in self._allow:
            text = pattern.sub(lambda m: " " * len(m.group(0)), text)
        return text

    # -------------------------------------------------------------- subjects

    def _subject_end(self, text: str, pos: int, kind: Subject, guess: bool) -> int | None:
        """Where the subject after a trigger ends, or None when there is none of ``kind``.

        ``guess``: whether capitalization may be read as a sign of a name or title.
        """
        if kind == "any":
            return pos
        end = self._name_end(text, pos, guess)
        if end is not None or kind == "name":
            return end
        rest = text[pos:]
        quoted = re.match(r"\s*[\"\u201c'\u2018]([^\"\u201d'\u2019]{1,80})[\"\u201d'\u2019]", rest)
        if quoted:
            return pos + quoted.end()
        generic = re.match(
            r"\s*(?:the|a|an|that|this)\s+(?:famous\s+|hit\s+|old\s+)?"
            r"(?:song|track|hit|single|tune|record|classic)\b",
            rest,
            re.I,
        )
        if generic:
            return pos + generic.end()
        word = _WORD.match(rest.lstrip())
        if guess and word and word.group(0)[0].isupper() and not self._is_style(word.group(0)):
            return pos + (len(rest) - len(rest.lstrip())) + word.end()
        return None

    def _name_end(self, text: str, pos: int, guess: bool) -> int | None:
        """End of a known artist or a capitalized multiword name starting at ``pos``."""
        lead = re.match(r"\s*(?:(?:the|a|an)\s+)?", text[pos:], re.I)
        start = pos + (lead.end() if lead else 0)
        known = self._known_at.match(text, start)
        if known:
            return known.end()
        if not guess:
            return None
        # "The Rolling Stones": a capitalized "The" is part of the name, "a"/"an" never are.
        the = re.match(r"\s*(?:the\s+)?", text[pos:])
        i = last = end = pos + (the.end() if the else 0)
        words: list[str] = []
        for word in _WORD.finditer(text, i):
            if text[last : word.start()].strip():
                break  # punctuation between words ends the run
            last = word.end()
            token = word.group(0)
            if token[0].isupper() or (token[0].isdigit() and words):
                words.append(token)
                end = word.end()
            elif not (words and token.casefold() in NAME_PARTICLES):
                break
        capitalized = [w for w in words if w[0].isupper()]
        if len(capitalized) >= 2 and not all(self._is_style(w) for w in capitalized):
            return end
        return None

    def _is_style(self, word: str) -> bool:
        core = re.sub(r"['\u2019]s$", "", word).strip(".-'\u2019").casefold()
        return core in self._style_words or core.rstrip("s") in self._style_words

    # -------------------------------------------------------------- decisions

    def _refuse(
        self,
        rule: Rule,
        field: FieldName,
        match: str,
        text: str,
        start: int | None = None,
        end: int | None = None,
    ) -> PolicyDecision:
        """A refusal, with the text minus the flagged phrase as the start of a rewording."""
        advice = ADVICE[rule.category]
        rest = text if start is None or end is None else _without(text, start, end)
        example = f"{rest}, {_PLACEHOLDERS}" if rest and field == "prompt" else _PLACEHOLDERS
        return PolicyDecision(
            allowed=False,
            rule=rule.name,
            category=rule.category,
            reason=f"{rule.reason} (in the {field}: {match!r})",
            suggestion=f'{advice} For example: "{example}".',
            field=field,
            match=match,
        )


# What a removed phrase leaves behind: an article or preposition that led into it ("a" of "a
# cover of ..."), and a credit that followed it ("by Queen", "from The Beatles").
_DANGLING: Final = re.compile(r"\b(?:a|an|the|of|in|like|by|from|with)\s*$", re.IGNORECASE)
_CREDIT: Final = re.compile(
    r"^\s*(?:(?:performed|sung|written)\s+)?(?:by|from)\s+(?:[Tt]he\s+)?"
    r"(?:[A-Z0-9][\w'\u2019.&-]*)(?:\s+(?:&|and|[A-Z0-9][\w'\u2019.&-]*))*"
)


def _without(text: str, start: int, end: int) -> str:
    """``text`` without ``text[start:end]`` and what only made sense with it, tidied: the
    start of a rewording that the suggestion offers."""
    before = _DANGLING.sub("", text[:start])
    after = _CREDIT.sub("", text[end:])
    rest = re.sub(r"\s+", " ", f"{before} {after}")
    rest = re.sub(r"\s+([,;:])", r"\1", rest)  # "synthwave , night" -> "synthwave, night"
    rest = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", rest)  # ", ," -> ","
    return rest.strip(" ,;:-")


def _mostly_capitalized(text: str) -> bool:
    words = re.findall(r"[^\W\d_][\w'\u2019-]*", text)
    return len(words) >= 4 and sum(w[0].isupper() for w in words) > 0.6 * len(words)


# Rules whose matching is built in (a regex made from the artist lists), named for decisions.
SUFFIX_RULE: Final = Rule("artist-suffix", "artist_style", r"(?!)", "any", _STYLE_REASON)
POSSESSIVE_RULE: Final = Rule("artist-voice", "voice_clone", r"(?!)", "any", _VOICE_REASON)
ARTIST_TAG_RULE: Final = Rule("artist-tag", "artist_style", r"(?!)", "any", "names an artist")
