"""What an edit costs the generator and what the splice keeps, as one JSON object.

Usage: ``python bench/editing.py [--runs 5] [--duration 10]``

On the CPU with the tiny checkpoint, a source track of ``--duration`` seconds (WAV), in one
run, the calls interleaved:

- ``call_s``: the best of ``--runs`` model calls for a text2music job of the source's length,
  a repaint of its middle third, and an extension by a third (a longer track), with their
  ratios to the text2music call;
- ``decode_source_s``: hash and decode the source (`generator.editing.decode_source`);
- ``splice_s``: put the source's samples back outside the window (`generator.editing.splice`);
- ``outside_window_max_abs_diff``: how far the pipeline's own output strays from the source
  outside the repaint window (what the splice corrects), and ``outside_window_equal``: whether
  the file's samples there equal the source's after the splice (measured, not assumed).

The tiny DiT is ~100 k parameters: the VAE (which encodes the source, then decodes the clip)
dominates its calls, so the ratios say more than the absolute times.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import io
import json
import platform
import time
from math import inf
from typing import Any

import numpy as np
import soundfile as sf
import torch

from acesteps.editing import EditSource
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.messages import GenerationRequest
from generator import audio
from generator.editing import decode_source, plan_edit, splice, splicer
from generator.jobs import Job
from generator.model import Model, load_pipeline
from generator.settings import GeneratorSettings

RATE = 44_100
SOURCE_ID = "0x" + "11" * 32


def _timed(model: Model, job: Job) -> float:
    started = time.perf_counter()
    model.generate([job])
    return time.perf_counter() - started


def _request(duration: float, **options: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id="0x" + "22" * 32,
        source="http",
        requester="bench",
        prompt="drums and bass",
        duration_s=duration,
        format="wav",
        seed=5,
        **options,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    model = load_pipeline(GeneratorSettings(generator_model="tiny", generator_device="cpu"))
    length = args.duration
    plain = Job.from_request(_request(length))
    (raw,) = model.generate([plain])
    wav = audio.encode(raw, length, "wav")
    origin = EditSource(
        kind="track",
        request_id=SOURCE_ID,
        cid=cid_of_bytes(wav),
        audio_hash=keccak256_hex(wav),
        duration_s=length,
    )
    started = time.perf_counter()
    source = decode_source(wav, origin)
    decode_s = time.perf_counter() - started

    start, end = round(length / 3, 3), round(2 * length / 3, 3)
    edit = {"source_track": SOURCE_ID, "edit_source": origin}
    repaint_request = _request(length, task="repaint", repaint_start=start, repaint_end=end, **edit)
    third = round(length / 3, 3)
    extend_request = _request(length + third, task="extend", extend_after=third, **edit)
    jobs = {"text2music": plain}
    for name, request in (("repaint", repaint_request), ("extend", extend_request)):
        jobs[name] = Job.from_request(request, edit=plan_edit(request, source))
    best = dict.fromkeys(jobs, inf)
    for _ in range(args.runs):
        for name, job in jobs.items():
            best[name] = min(best[name], _timed(model, job))

    repaint = jobs["repaint"]
    assert repaint.edit is not None
    (out,) = model.generate([repaint])
    pcm = audio.resample(out, length)
    started = time.perf_counter()
    spliced = splice(pcm.T, repaint.edit).T
    splice_s = time.perf_counter() - started
    a, b = round(start * RATE), round(end * RATE)
    original = source.pcm.T
    stray = max(np.abs(pcm[:a] - original[:a]).max(), np.abs(pcm[b:] - original[b:]).max())
    data = audio.encode(out, length, "wav", None, splicer(repaint.edit))
    got, _ = sf.read(io.BytesIO(data), dtype="int16")
    kept, _ = sf.read(io.BytesIO(wav), dtype="int16")
    equal = bool(np.array_equal(got[:a], kept[:a]) and np.array_equal(got[b:], kept[b:]))
    assert spliced.shape == pcm.shape

    print(
        json.dumps(
            {
                "bench": "editing",
                "device": "cpu",
                "cpu": platform.processor() or platform.machine(),
                "torch_threads": torch.get_num_threads(),
                "source_s": length,
                "repaint_window_s": [start, end],
                "extend_after_s": third,
                "runs": args.runs,
                "call_s": {name: round(s, 4) for name, s in best.items()},
                "ratio_to_text2music": {
                    name: round(s / best["text2music"], 3) for name, s in best.items()
                },
                "decode_source_s": round(decode_s, 4),
                "splice_s": round(splice_s, 4),
                "outside_window_max_abs_diff": round(float(stray), 4),
                "outside_window_equal": equal,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
