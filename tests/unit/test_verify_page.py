"""The verification page's script against the Python side, without a browser: the committed
bundle is what its sources build to, and the page says the same words as ``acesteps verify``
and parses a target the same way. Needs Node.js (and web/install's packages for the build,
installed by ``web/build`` itself when missing). The page in Chromium:
tests/integration/test_verify_page.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from acesteps.verify import HEADLINE, Status, Verdict, malformed, parse_target

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web" / "verify"

TARGETS = [
    "0x" + "ab" * 32,
    "0x" + "AB" * 32,
    "  0x" + "0c" * 32 + "  ",
    "0x" + "ab" * 31,
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR",
    "http://127.0.0.1:18080/ipfs/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    "https://gw.example/prefix/ipfs/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    "/track.mp3?download=1",
    "https://bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku.ipfs.dweb.example/",
    "https://gw.example/ipfs/not-a-cid",
    "ftp://gw.example/ipfs/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    "https://example.org/track.mp3",
    "hello",
    "",
]


def node(script: str) -> Any:
    """Run an ES module script with Node.js; its stdout as JSON."""
    if shutil.which("node") is None:
        pytest.fail("node not found: Node.js 20+ builds and tests the verification page")
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_committed_bundle_is_what_the_sources_build_to() -> None:
    done = subprocess.run(
        [str(ROOT / "web" / "build"), "--check"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{done.stderr}\nrun web/build and commit the bundle"


def test_the_page_and_the_command_say_the_same_words() -> None:
    words = node(
        f"import * as w from {json.dumps(str(WEB / 'words.js'))};\n"
        "console.log(JSON.stringify({status: w.STATUS, headline: w.HEADLINE, exit: w.EXIT_CODE,"
        " malformed: w.REASON.malformed('0x12')}));"
    )
    assert words["status"] == {s.name: s.value for s in Status}
    assert words["headline"] == {s.value: HEADLINE[s] for s in Status}
    assert words["exit"] == {s.value: Verdict(s, "", "").exit_code for s in Status}
    assert words["malformed"] == malformed("0x12")


def test_the_page_parses_a_target_as_the_command_does() -> None:
    parsed = node(
        f"import {{ parseTarget }} from {json.dumps(str(WEB / 'target.js'))};\n"
        f"const targets = {json.dumps(TARGETS)};\n"
        "console.log(JSON.stringify(targets.map((t) => parseTarget(t))));"
    )
    for text, page in zip(TARGETS, parsed, strict=True):
        ours = parse_target(text)
        if not text.strip():
            assert page == {}
            continue
        expected = None
        if ours is not None:
            expected = {
                k: v
                for k, v in {
                    "requestId": ours.request_id,
                    "cid": ours.cid,
                    "gateway": ours.gateway,
                }.items()
                if v is not None
            }
        assert page == expected, text
