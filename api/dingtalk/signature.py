"""Callback authentication: `timestamp` + `sign` headers (HMAC-SHA256 of timestamp\\nsecret), or a token.

sign = base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")), see dingtalk-protocol.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping

from pydantic import SecretStr

_MILLIS = re.compile(r"[0-9]{1,15}")


class SignatureError(Exception):
    """The request is not authentic. The message is a reason safe to return and log."""


def compute_sign(timestamp: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_callback(
    headers: Mapping[str, str],
    *,
    secret: SecretStr | None,
    outgoing_token: SecretStr | None,
    window_seconds: float,
    now_ms: int,
    allow_unsigned: bool,
) -> str:
    """Return how the request was authenticated ("sign", "token", "unsigned"), or raise SignatureError."""
    token = headers.get("token")
    if outgoing_token is not None and token is not None:
        if hmac.compare_digest(token.encode(), outgoing_token.get_secret_value().encode()):
            return "token"
        raise SignatureError("token header does not match DINGTALK_OUTGOING_TOKEN")
    if secret is None:
        if outgoing_token is not None:
            raise SignatureError("missing token header")
        if allow_unsigned:
            return "unsigned"
        raise SignatureError("no signing secret configured on the server (set SECRET)")

    timestamp = headers.get("timestamp")
    sign = headers.get("sign")
    if not timestamp or not sign:
        raise SignatureError("missing timestamp or sign header")
    if not _MILLIS.fullmatch(timestamp):
        raise SignatureError("timestamp header is not a millisecond number")
    if abs(now_ms - int(timestamp)) > window_seconds * 1000:
        raise SignatureError("timestamp outside the accepted window (check the server clock)")
    expected = compute_sign(timestamp, secret.get_secret_value())
    if not hmac.compare_digest(expected.encode(), sign.encode()):
        raise SignatureError("signature does not match")
    return "sign"
