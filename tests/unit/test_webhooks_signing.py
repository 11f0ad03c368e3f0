"""Webhook signatures against the independent ``standardwebhooks`` package: what we sign, it
verifies; a changed body, timestamp, id or secret does not verify."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from listener.api.webhooks.signing import derive_secret, headers, secret_key, sign

MASTER = b"m" * 32
BODY = json.dumps({"type": "generation.completed", "data": {"id": "0x" + "ab" * 32}}).encode()


def test_our_signature_verifies_with_the_standard_library() -> None:
    secret = derive_secret(MASTER, "alice")
    now = int(time.time())
    sent = headers(secret, "msg_1", now, BODY)
    assert Webhook(secret).verify(BODY, sent) == json.loads(BODY)
    assert sent["webhook-id"] == "msg_1" and sent["webhook-timestamp"] == str(now)
    assert sent["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace(b"completed", b"failed")),
        lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
        lambda h, b: ({**h, "webhook-id": "msg_2"}, b),
        lambda h, b: ({**h, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}, b),
    ],
    ids=["body", "timestamp", "id", "signature"],
)
def test_a_tampered_message_does_not_verify(tamper) -> None:  # type: ignore[no-untyped-def]
    secret = derive_secret(MASTER, "alice")
    sent, body = tamper(headers(secret, "msg_1", int(time.time()), BODY), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, sent)


def test_an_old_timestamp_does_not_verify() -> None:
    # Standard Webhooks receivers refuse timestamps more than 5 minutes off: replays.
    secret = derive_secret(MASTER, "alice")
    old = headers(secret, "msg_1", int(time.time()) - 600, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, old)


def test_another_keys_secret_does_not_verify() -> None:
    sent = headers(derive_secret(MASTER, "alice"), "msg_1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(derive_secret(MASTER, "bob")).verify(BODY, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(derive_secret(b"another master", "alice")).verify(BODY, sent)


def test_secrets_are_derived_per_key_from_the_master() -> None:
    secret = derive_secret(MASTER, "alice")
    expected = hmac.new(MASTER, b"acesteps.webhook.v1\0alice", hashlib.sha256).digest()
    assert secret == "whsec_" + base64.b64encode(expected).decode()
    assert secret_key(secret) == expected and len(expected) == 32
    assert derive_secret(MASTER, "alice") == secret  # the same on every replica
    assert len({derive_secret(MASTER, k) for k in ("alice", "bob", "local", "alice\0")}) == 4


def test_the_signature_is_what_the_specification_says() -> None:
    secret = derive_secret(MASTER, "k")
    signed = b"msg_9.1700000000." + BODY
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    assert sign(secret, "msg_9", 1700000000, BODY) == "v1," + base64.b64encode(digest).decode()
    theirs = Webhook(secret).sign("msg_9", datetime.fromtimestamp(1700000000, UTC), BODY.decode())
    assert sign(secret, "msg_9", 1700000000, BODY) == theirs
