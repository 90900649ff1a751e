"""Callback signatures, including DingTalk's published test vector."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from api.dingtalk.signature import SignatureError, compute_sign, verify_callback

NOW = 1577262236757


def test_published_test_vector() -> None:
    assert compute_sign("1577262236757", "this is a secret") == "DJrE6qdyVGCQz9z5r2MDuNcNAhwYnuAkyj13cx169CA="


def verify(headers: dict[str, str], **kw: object) -> str:
    options: dict[str, object] = {
        "secret": SecretStr("this is a secret"),
        "outgoing_token": None,
        "window_seconds": 3600,
        "now_ms": NOW,
        "allow_unsigned": False,
    }
    options.update(kw)
    return verify_callback(headers, **options)  # type: ignore[arg-type]


def test_valid_sign_passes() -> None:
    assert (
        verify({"timestamp": "1577262236757", "sign": "DJrE6qdyVGCQz9z5r2MDuNcNAhwYnuAkyj13cx169CA="})
        == "sign"
    )


@pytest.mark.parametrize(
    ("offset_ms", "ok"), [(3_600_000, True), (-3_600_000, True), (3_600_001, False), (-3_600_001, False)]
)
def test_window_edges(offset_ms: int, ok: bool) -> None:
    ts = str(NOW + offset_ms)
    headers = {"timestamp": ts, "sign": compute_sign(ts, "this is a secret")}
    if ok:
        assert verify(headers) == "sign"
    else:
        with pytest.raises(SignatureError, match="window"):
            verify(headers)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"sign": "x"}, "missing"),
        ({"timestamp": "-5", "sign": "x"}, "millisecond"),
        ({"timestamp": "1" * 40, "sign": "x"}, "millisecond"),
        ({"timestamp": "17\u00b2", "sign": "x"}, "millisecond"),  # str.isdigit() accepts "²", int() does not
        ({"timestamp": "１２３", "sign": "x"}, "millisecond"),
        (
            {"timestamp": "1577262236757", "sign": "DJrE6qdyVGCQz9z5r2MDuNcNAhwYnuAkyj13cx169CB="},
            "does not match",
        ),
        ({"timestamp": "1577262236757", "sign": "签名"}, "does not match"),
    ],
)
def test_bad_headers(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify(headers)


def test_token_instead_of_sign() -> None:
    token = SecretStr("outgoing")
    assert verify({"token": "outgoing"}, outgoing_token=token) == "token"
    with pytest.raises(SignatureError, match="DINGTALK_OUTGOING_TOKEN"):
        verify({"token": "other"}, outgoing_token=token)
    # a token header is ignored when no token is configured: the signature still decides
    with pytest.raises(SignatureError, match="missing"):
        verify({"token": "outgoing"})


def test_no_secret_at_all() -> None:
    assert verify({}, secret=None, allow_unsigned=True) == "unsigned"
    with pytest.raises(SignatureError, match="SECRET"):
        verify({}, secret=None)
    with pytest.raises(SignatureError, match="token"):
        verify({}, secret=None, outgoing_token=SecretStr("t"), allow_unsigned=True)
