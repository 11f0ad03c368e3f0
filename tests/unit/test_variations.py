"""Variations: a child's key, seed and message (`acesteps.variations`), and what the generator
makes of a parent and its children with the tiny checkpoint."""

from __future__ import annotations

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak
from pydantic import ValidationError

from acesteps.messages import GenerationRequest
from acesteps.options import MAX_SEED, GenerationOptions
from acesteps.variations import child_request, default_seed, variation_key, variation_seed
from generator.jobs import Job, effective_seed
from generator.model import Model
from generator.pipeline import pcm_keccak256
from generator.settings import GeneratorSettings
from tests.unit.generator_fixtures import tiny_dir, tiny_model, tiny_settings

__all__ = ["tiny_dir", "tiny_model", "tiny_settings"]

PARENT = "0x" + "5a" * 32


def _parent(**changes: object) -> GenerationRequest:
    fields: dict[str, object] = {
        "request_id": PARENT,
        "source": "http",
        "requester": "key-1",
        "offchain_id": "0x" + "01" * 32,
        "prompt": "a calm piano piece",
        "duration_s": 5,
        "variations": 3,
    }
    return GenerationRequest.model_validate(fields | changes)


def test_a_childs_key_is_keccak_of_the_abi_encoded_parent_id_and_index() -> None:
    expected = (
        "0x" + keccak(abi_encode(["bytes32", "uint256"], [bytes.fromhex("5a" * 32), 2])).hex()
    )
    assert variation_key(PARENT, 2) == expected
    assert len({variation_key(PARENT, k) for k in (1, 2, 3)}) == 3
    for index in (0, 4):
        with pytest.raises(ValueError, match=r"outside 1\.\.3"):
            variation_key(PARENT, index)


def test_one_variation_is_an_ordinary_request_and_five_are_refused() -> None:
    assert GenerationOptions(prompt="x", variations=1).variations is None
    assert "variations" not in GenerationOptions(prompt="x", variations=1).model_dump()
    with pytest.raises(ValidationError, match="less than or equal to 4"):
        GenerationOptions(prompt="x", variations=5)
    with pytest.raises(ValidationError, match="must be an integer"):
        GenerationOptions.model_validate({"prompt": "x", "variations": True})


@pytest.mark.parametrize("seed", [None, 7, MAX_SEED])
def test_children_get_the_next_seeds_and_the_parents_options(seed: int | None) -> None:
    parent = _parent(seed=seed, bpm=96, tags=["piano"])
    base = seed if seed is not None else default_seed(PARENT)
    assert effective_seed(parent) == base  # the generator's rule for the parent itself
    for k in (1, 2):
        key = variation_key(PARENT, k)
        child = child_request(parent, k, "0x" + f"{k:064x}", key)
        assert child.seed == (base + k) % 2**32 == variation_seed(parent, k)
        assert (child.parent_id, child.variation, child.variations) == (PARENT, k, None)
        assert (child.offchain_id, child.bpm, child.tags) == (key, 96, ("piano",))
        assert child.options() | {"seed": None, "variations": None} == parent.options() | {
            "seed": None,
            "variations": None,
        }
    with pytest.raises(ValueError, match="has no variation 3"):
        child_request(parent, 3, "0x" + "03" * 32)


def test_a_variation_names_both_its_parent_and_index_and_has_none_of_its_own() -> None:
    with pytest.raises(ValidationError, match="names both"):
        _parent(variations=None, parent_id=PARENT)
    with pytest.raises(ValidationError, match="no variations of its own"):
        _parent(request_id="0x" + "02" * 32, parent_id=PARENT, variation=1)
    plain = _parent(variations=None).model_dump(mode="json")
    assert not {"parent_id", "variation", "variations"} & set(plain)  # bytes of others kept


def test_variations_are_distinct_tracks_that_batch_together(
    tiny_settings: GeneratorSettings, tiny_model: Model
) -> None:
    parent = _parent(seed=40)
    requests = [parent] + [
        child_request(parent, k, "0x" + f"{k:064x}", variation_key(PARENT, k)) for k in (1, 2)
    ]
    jobs = [Job.from_request(r) for r in requests]
    assert [j.seed for j in jobs] == [40, 41, 42]
    pcms = [pcm_keccak256(raw) for raw in tiny_model.generate(jobs)]
    assert len(set(pcms)) == 3
    # The same shape: a batched generator runs a request's variations in one call.
    batched = tiny_model.with_settings(tiny_settings.with_overrides(generator_batch_mode="batched"))
    assert batched.plan(jobs) == [[0, 1, 2]]
    # A child is an ordinary request: the same bytes as a request with its seed.
    lone = GenerationRequest.model_validate(
        parent.model_dump() | {"variations": None, "seed": 41, "request_id": "0x" + "09" * 32}
    )
    assert pcm_keccak256(tiny_model.generate([Job.from_request(lone)])[0]) == pcms[1]
