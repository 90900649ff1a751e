"""Classifying model failures, whatever shape the endpoint's error body has."""

from __future__ import annotations

import httpx
import openai
import pytest

from agent.errors import ModelErrorKind
from agent.model.errors import classify_model_error, public_endpoint
from agent.settings.config import Settings

SETTINGS = Settings(
    _env_file=None, openai_api_key="k", openai_api_base="http://user:pw@localhost:11434/v1?x=1"
)  # type: ignore[call-arg]


def status_error(status: int, body: object) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://localhost:11434/v1/chat/completions")
    response = httpx.Response(status, request=request, json=body)
    cls = {401: openai.AuthenticationError, 404: openai.NotFoundError, 429: openai.RateLimitError}.get(
        status, openai.APIStatusError
    )
    return cls("error", response=response, body=body)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (404, {"error": {"error": "model 'llama9' not found"}}, ModelErrorKind.MODEL_NOT_FOUND),
        (404, {"error": "model not found"}, ModelErrorKind.MODEL_NOT_FOUND),
        (404, "plain text", ModelErrorKind.MODEL_NOT_FOUND),
        (404, None, ModelErrorKind.MODEL_NOT_FOUND),
        (429, {"code": "insufficient_quota"}, ModelErrorKind.QUOTA),
        (429, {"error": {"code": "insufficient_quota"}}, ModelErrorKind.QUOTA),
        (429, {"error": {"code": ["odd"]}}, ModelErrorKind.RATE_LIMITED),
        (401, [1, 2], ModelErrorKind.AUTHENTICATION),
        (502, {}, ModelErrorKind.SERVER_ERROR),
        (418, {}, ModelErrorKind.UNKNOWN),
    ],
)
def test_error_bodies_of_any_shape(status: int, body: object, kind: ModelErrorKind) -> None:
    assert classify_model_error(status_error(status, body), SETTINGS).kind is kind


def test_non_openai_errors() -> None:
    assert classify_model_error(TimeoutError(), SETTINGS).kind is ModelErrorKind.TIMEOUT
    assert classify_model_error(ConnectionRefusedError(), SETTINGS).kind is ModelErrorKind.CONNECTION
    assert classify_model_error(ValueError("x"), SETTINGS).kind is ModelErrorKind.UNKNOWN


def test_logged_endpoint_has_no_credentials_or_query() -> None:
    assert public_endpoint(SETTINGS.openai_api_base) == "http://localhost:11434/v1"
    error = classify_model_error(status_error(401, {}), SETTINGS)
    assert "pw" not in error.cause + error.fix
