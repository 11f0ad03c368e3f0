"""A tiny random-weight ACE-Step 1.5 checkpoint, built by code.

Tests and the offline demo load it through the production loader (`generator.model`), so it
has exactly the on-disk layout of a real diffusers checkpoint: ``model_index.json`` and
``transformer/``, ``condition_encoder/``, ``text_encoder/`` (a Qwen3 base model),
``tokenizer/`` (a Qwen2 byte-level BPE), ``vae/`` (AutoencoderOobleck), ``scheduler/``
(flow-matching Euler). Every component is its real class with a shrunken config; the sizes
that must agree (DiT ``in_channels`` = 3 x acoustic dim; timbre dim = acoustic dim = VAE
latent channels = VAE encoder width / 2; condition encoder text width = text encoder width;
condition encoder width = DiT width) are derived from a few numbers below, and what must not
shrink is kept: the VAE's downsampling ratios ``[2, 4, 4, 6, 10]``
(1920 samples per latent frame, 25 Hz at 48 kHz stereo), patch size 2, the 15000-frame
silence latent and the 256-wide timestep embedding. The transformer is marked turbo, as the
default production checkpoint is.

The build is offline, CPU-only, deterministic (its own seeded RNG; the global RNG is left
alone), takes well under a second and writes ~1.5 MB. It is cached under the tiny directory
and rebuilt only when missing or when `STAMP` (version + library versions) changes. Never
commit it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Final

import diffusers
import tokenizers
import torch
import transformers
from diffusers import (
    AceStepPipeline,
    AceStepTransformer1DModel,
    AutoencoderOobleck,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3Model
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

__all__ = [
    "STAMP",
    "STAMP_FILE",
    "TINY_VERSION",
    "build_tiny",
    "ensure_tiny",
    "is_current",
    "train_tokenizer",
]

TINY_VERSION: Final = 1
"""Bump when the recipe changes: every cached tiny checkpoint is then rebuilt."""

STAMP: Final[dict[str, Any]] = {
    "tiny_version": TINY_VERSION,
    "diffusers": diffusers.__version__,
    "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__,
}
STAMP_FILE: Final = "acesteps-tiny.json"

SEED: Final = 20_240_915
EOS: Final = "<|endoftext|>"
VOCAB_SIZE: Final = 512

# The three free sizes; everything that must agree is derived from them.
HIDDEN: Final = 32  # text encoder = condition encoder = DiT width
ACOUSTIC: Final = 8  # latent channels: VAE latent = timbre input = DiT acoustic dim
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 8

# Text the tokenizer is trained on: the pipeline's own templates plus musical vocabulary, so
# captions and lyrics tokenize into a realistic number of merged tokens.
_CORPUS: Final = (
    "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n"
    "# Caption\n{}\n\n# Metas\n- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n"
    "- duration: 30 seconds\n<|endoftext|>\n",
    "# Languages\nen\n\n# Lyric\n[verse]\n{}\n[chorus]\n{}<|endoftext|>",
)
_WORDS: Final = (
    "upbeat dreamy lo-fi hip hop piano rain jazz trio night rock guitar ambient pad calm bass "
    "drums synth pop female male vocals choir strings orchestral cinematic epic acoustic folk "
    "electronic house techno soul funk disco blues country reggae metal punk 1920s 1980s "
    "warm bright dark mellow energetic sad happy slow fast tempo groove melody harmony "
    "the a and of in on with love heart light morning sky dance sing tonight forever home "
    "Instrumental verse chorus bridge outro intro hook"
)


def train_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE with Qwen2's normalizer and split regex, trained in-process."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    words = _WORDS.split()
    lines = [" ".join(words[i : i + 6]) for i in range(0, len(words), 3)]
    corpus = [t.format(line, line) for line in lines for t in _CORPUS]
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    # tokenizers 0.23 refuses "a b" merge strings in the constructor: pass pairs.
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token=EOS, pad_token=EOS)


def _build_pipeline(seed: int = SEED, turbo: bool = True) -> AceStepPipeline:
    """Every component from a shrunken config, random weights from a fixed seed."""
    tokenizer = train_tokenizer()
    attention: dict[str, Any] = {
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # 1. Text encoder: a Qwen3 *base* model (the pipeline reads last_hidden_state).
        text_encoder = Qwen3Model(
            Qwen3Config(
                vocab_size=len(tokenizer),
                hidden_size=HIDDEN,
                intermediate_size=2 * HIDDEN,
                num_hidden_layers=2,
                max_position_embeddings=4096,
                tie_word_embeddings=True,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **attention,
            )
        ).eval()
        # 2. Condition encoder: text width in, DiT width out; timbre input = latent channels.
        condition_encoder = AceStepConditionEncoder(
            hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            text_hidden_dim=HIDDEN,
            timbre_hidden_dim=ACOUSTIC,
            num_lyric_encoder_hidden_layers=2,
            num_timbre_encoder_hidden_layers=2,
            sliding_window=16,
            **attention,
        )
        # The real silence latent is VAE-encoded silence; a fixed random one keeps the timbre
        # path non-degenerate (all zeros would make every timbre embedding equal).
        with torch.no_grad():
            condition_encoder.silence_latent.normal_()
        # 3. DiT: in_channels = noise + source latents + chunk mask = 3 x acoustic dim.
        transformer = AceStepTransformer1DModel(
            hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            num_hidden_layers=2,
            in_channels=3 * ACOUSTIC,
            audio_acoustic_hidden_dim=ACOUSTIC,
            patch_size=2,
            sliding_window=16,
            is_turbo=turbo,
            model_version="turbo" if turbo else "base",
            **attention,
        )
        # 4. VAE: keep the 1920x ratios and 48 kHz stereo; encoder width = 2 x latent channels.
        vae = AutoencoderOobleck(
            encoder_hidden_size=2 * ACOUSTIC,
            downsampling_ratios=[2, 4, 4, 6, 10],
            channel_multiples=[1, 1, 1, 1, 1],
            decoder_channels=4,
            decoder_input_channels=ACOUSTIC,
            audio_channels=2,
            sampling_rate=48_000,
        )
    # 5. Scheduler: ACE-Step feeds timesteps in [0, 1] and computes its own shifted schedule.
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    return AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=scheduler,
    )


def is_current(directory: Path) -> bool:
    """True when ``directory`` holds a tiny checkpoint built with the current `STAMP`."""
    return _stamped(directory, STAMP)


def _stamped(directory: Path, wanted: dict[str, Any]) -> bool:
    try:
        stamp = json.loads((directory / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return False
    return bool(stamp == wanted and (directory / "model_index.json").is_file())


def build_tiny(directory: Path, seed: int = SEED, *, turbo: bool = True) -> Path:
    """Build the checkpoint into ``directory`` (replacing what is there); returns it.

    Written to a sibling temporary directory first and renamed into place, so a concurrent
    reader never sees half a checkpoint and an interrupted build leaves nothing behind.
    Another ``seed`` gives other random weights (a second, different checkpoint for tests of
    several models; `ensure_tiny` rebuilds it with the default seed). ``turbo=False`` marks
    the transformer a base model (tests of the tasks turbo checkpoints refuse).
    """
    directory = directory.resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    stamp = STAMP if seed == SEED else {**STAMP, "seed": seed}
    stamp = stamp if turbo else {**stamp, "turbo": False}
    try:
        _build_pipeline(seed, turbo).save_pretrained(tmp, safe_serialization=True)
        (tmp / STAMP_FILE).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        try:
            tmp.rename(directory)
        except OSError:
            # Another process renamed its build into place first; theirs is as good as ours.
            if not _stamped(directory, stamp):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def ensure_tiny(directory: Path) -> Path:
    """The cached checkpoint, built first if missing or stale."""
    directory = directory.resolve()
    return directory if is_current(directory) else build_tiny(directory)
