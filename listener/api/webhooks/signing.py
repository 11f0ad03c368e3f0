"""Standard Webhooks signatures, and the signing secret of each API key.

A message is signed with HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{body}`` and
sent with the headers ``webhook-id``, ``webhook-timestamp`` (unix seconds, of the attempt)
and ``webhook-signature: v1,<base64 signature>`` (https://www.standardwebhooks.com/), so any
Standard Webhooks library verifies it with the key's secret, ``whsec_<base64 key>``.

Each API key has its own secret, derived from one master key: HMAC-SHA256(master,
``acesteps.webhook.v1`` NUL key id). Nothing per key is stored, every replica that shares the
master derives the same secrets, and one key's secret tells nothing of another's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["SECRET_PREFIX", "derive_secret", "headers", "secret_key", "sign"]

SECRET_PREFIX = "whsec_"
_CONTEXT = b"acesteps.webhook.v1\0"


def derive_secret(master: bytes, key_id: str) -> str:
    """The signing secret of ``key_id``'s webhooks: ``whsec_`` + base64 of a 32-byte key."""
    key = hmac.new(master, _CONTEXT + key_id.encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(key).decode()


def secret_key(secret: str) -> bytes:
    """The key bytes of a ``whsec_...`` secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt (its own timestamp; the id is the delivery's)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "Content-Type": "application/json",
    }
