"""Requests with options (``requestGenerationWithOptions``): the listener pairs each
``GenerationRequested`` with the ``RequestOptions`` log of its transaction, and refuses
options that are not a valid request with a reason the requester can read."""

from __future__ import annotations

import dataclasses

import pytest
from eth_abi.abi import encode as abi_encode

from acesteps.chainoptions import OPTIONS_TYPE, decode_options, encode_options
from acesteps.messages import GenerationFailed, GenerationRequest, GenerationRevoked
from acesteps.registry import event_topic
from listener.chainreader import RawLog
from tests.unit.test_listener_poller import FakeChain, MemorySink, drain, payload, poller, rid

OPTIONS = event_topic("RequestOptions")


def options_data(**asked: object) -> bytes:
    return abi_encode([OPTIONS_TYPE], [encode_options(**asked)])  # type: ignore[arg-type]


def raw_options(*fields: object) -> bytes:
    """An Options struct with any values, as a hostile caller could send."""
    return abi_encode(
        ["(bool,uint32,bytes,uint16,bytes,uint8,bytes,bool,bytes[],bytes,bytes,uint8)"], [fields]
    )


BAD_KEY = raw_options(False, 0, b"", 0, b"\xff\xfeC", 0, b"", False, [], b"", b"", 0)
BAD_TAG = raw_options(False, 0, b"", 0, b"", 0, b"", False, [b"ok", b"\xc3"], b"", b"", 0)
BAD_PRESET = raw_options(False, 0, b"", 0, b"", 0, b"", False, [], b"", b"lo\xe9fi", 0)
FIVE = raw_options(False, 0, b"", 0, b"", 0, b"", False, [], b"", b"", 5)  # the contract refuses it

# The struct of contract 1.2.0 (no preset), as a deployment of that version emits it.
OPTIONS_1_2 = "(bool,uint32,string,uint16,string,uint8,string,bool,string[],string)"


class OptionsChain(FakeChain):
    """FakeChain whose RequestOptions logs come from the transaction of the log before them
    and carry one indexed topic (the request id), as the contract emits them."""

    async def logs(self, start: int, end: int) -> list[RawLog]:
        out = await super().logs(start, end)
        for i, log in enumerate(out):
            if log.topics[0] == OPTIONS:
                out[i] = dataclasses.replace(log, tx_hash=out[i - 1].tx_hash, topics=log.topics[:2])
        return out


def requested_with(n: int, data: bytes) -> tuple[tuple[str, bytes], tuple[str, bytes, str]]:
    return (rid(n), payload()), (rid(n), abi_encode(["bytes"], [data]), OPTIONS)


async def run(*blocks: tuple[tuple[str, bytes] | tuple[str, bytes, str], ...]) -> MemorySink:
    chain, sink = OptionsChain(), MemorySink()
    for logs in blocks:
        chain.mine(*logs)
    chain.mine_empty(3)
    await drain(poller(chain, sink))
    return sink


def test_options_round_trip_and_zero_values_mean_not_asked() -> None:
    assert decode_options(options_data()) == {}
    asked = decode_options(
        options_data(
            seed=0, format="wav", bpm=120, key="C major", time_signature=3,
            vocal_language="fr", instrumental=True, tags=("piano", "rain"), model="xl-turbo",
            preset="lofi", variations=3,
        )
    )  # fmt: skip
    assert asked == {
        "seed": 0,  # hasSeed: a zero seed is a seed
        "format": "wav",
        "bpm": 120,
        "key": "C major",
        "time_signature": 3,
        "vocal_language": "fr",
        "instrumental": True,
        "tags": ("piano", "rain"),
        "model": "xl-turbo",
        "preset": "lofi",
        "variations": 3,
    }
    # 0 and 1 variations: one track, not asked.
    assert decode_options(options_data(variations=1)) == {}
    assert decode_options(abi_encode([OPTIONS_TYPE], [encode_options()])) == {}


def test_options_of_a_1_2_0_deployment_ask_no_preset_and_no_variations() -> None:
    old = abi_encode([OPTIONS_1_2], [encode_options(bpm=96, model="xl-turbo")[:10]])
    assert decode_options(old) == {"bpm": 96, "model": "xl-turbo"}
    assert decode_options(abi_encode([OPTIONS_1_2], [encode_options()[:10]])) == {}
    # Each layout is read only as exactly what abi.encode makes: with bytes after, neither.
    with pytest.raises(ValueError, match="not an ABI-encoded Options struct"):
        decode_options(old + b"\x00" * 32)
    # The struct with preset but without variations was never deployed: not read.
    eleven = "(bool,uint32,string,uint16,string,uint8,string,bool,string[],string,string)"
    with pytest.raises(ValueError, match="Options struct"):
        decode_options(abi_encode([eleven], [encode_options(bpm=96, preset="lofi")[:11]]))


async def test_a_request_with_options_carries_them() -> None:
    sink = await run(
        requested_with(1, options_data(bpm=96, key="f# minor", tags=("waltz",), seed=5)),
        ((rid(2), payload()),),  # a plain request beside it
    )
    first, second = sink.of(GenerationRequest)
    assert (first.bpm, first.key, first.tags, first.seed) == (96, "F# minor", ("waltz",), 5)  # type: ignore[attr-defined]
    assert second.bpm is None and second.tags == ()  # type: ignore[attr-defined]
    assert sink.of(GenerationFailed) == []


async def test_a_request_with_a_preset_carries_it() -> None:
    sink = await run(
        requested_with(1, options_data(preset="lofi", model="xl-turbo", tags=("rain",))),
        requested_with(2, options_data(bpm=90)),  # no preset asked: none
        requested_with(3, abi_encode([OPTIONS_1_2], [encode_options(bpm=80)[:10]])),  # 1.2.0
    )
    first, second, third = sink.of(GenerationRequest)
    assert (first.preset, first.model, first.tags) == ("lofi", "xl-turbo", ("rain",))  # type: ignore[attr-defined]
    assert (second.preset, second.bpm) == (None, 90)  # type: ignore[attr-defined]
    assert (third.preset, third.bpm) == (None, 80)  # type: ignore[attr-defined]
    assert sink.of(GenerationFailed) == []


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (options_data(bpm=500), "invalid_request", "bpm: Input should be less than or equal"),
        (options_data(key="H major"), "invalid_request", "key: Value error, unknown key"),
        (options_data(time_signature=5), "invalid_request", "timeSignature"),
        (options_data(vocal_language="xx"), "invalid_request", "vocalLanguage"),
        (options_data(format="ogg"), "invalid_request", "format"),
        (options_data(model="no such/model"), "invalid_request", "model"),
        (options_data(preset="bad name!"), "invalid_request", "preset: String should match"),
        (options_data(preset="x" * 65), "invalid_request", "preset"),
        (options_data(tags=("x",) * 17), "invalid_request", "tags"),
        (FIVE, "invalid_request", "variations: Input should be less than or equal to 4"),
        (BAD_KEY, "invalid_utf8", "key is not valid UTF-8"),
        (BAD_TAG, "invalid_utf8", "tags[1]"),
        (BAD_PRESET, "invalid_utf8", "preset is not valid UTF-8 (byte 2)"),
        (b"\x00\x01 not an encoding", "invalid_options", "not an ABI-encoded Options struct"),
        (options_data() + b"\x00" * 32, "invalid_options", "bytes after"),
    ],
)
async def test_hostile_options_fail_the_request_with_a_reason(
    data: bytes, code: str, words: str
) -> None:
    sink = await run(requested_with(1, data), ((rid(2), payload()),))
    (failed,) = sink.of(GenerationFailed)
    assert failed.request_id == rid(1) and failed.code == code  # type: ignore[attr-defined]
    assert words in failed.message, failed.message  # type: ignore[attr-defined]
    assert sink.ids(GenerationRequest) == [rid(2)]


async def test_an_instrumental_request_with_lyrics_fails_with_a_reason() -> None:
    lyrics = abi_encode(["bytes", "bytes", "uint32"], [b"a song", b"la la", 30])
    sink = await run(
        (
            (rid(1), lyrics),
            (rid(1), abi_encode(["bytes"], [options_data(instrumental=True)]), OPTIONS),
        )
    )
    (failed,) = sink.of(GenerationFailed)
    assert "instrumental request carries no lyrics" in failed.message  # type: ignore[attr-defined]


async def test_options_survive_a_reorg_rescan() -> None:
    # A request re-mined in another block after a reorg deeper than the confirmations is new
    # to the rescan: it is emitted with its options, which come from the rescan's logs.
    chain, sink = OptionsChain(), MemorySink()
    chain.mine(*requested_with(1, options_data(bpm=90)))
    chain.mine_empty(3)
    p = poller(chain, sink)
    await drain(p)
    chain.reorg(4)
    chain.mine_empty(1)
    chain.mine(*requested_with(2, options_data(bpm=140)))
    chain.mine_empty(4)
    await drain(p)
    assert sink.ids(GenerationRevoked) == [rid(1)]
    bpms = {r.request_id: r.bpm for r in sink.of(GenerationRequest)}  # type: ignore[attr-defined]
    assert bpms == {rid(1): 90, rid(2): 140}
