"""Turn a failed model call into a ModelError: a kind for the person, a cause and a fix for operators.

The fixes follow the troubleshooting list of the user's guide (key, base URL, model name, network,
balance). Nothing here prints a key: only the endpoint's scheme, host, port and path.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from agent.errors import ModelError, ModelErrorKind
from agent.settings.choices import Provider
from agent.settings.config import Settings


def public_endpoint(url: str) -> str:
    """The base URL without user info, query or fragment: safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _status_kind(status: int, code: str) -> ModelErrorKind:
    if status == 401:
        return ModelErrorKind.AUTHENTICATION
    if status == 403:
        return ModelErrorKind.PERMISSION
    if status == 404:
        return ModelErrorKind.MODEL_NOT_FOUND
    if status == 429:
        return ModelErrorKind.QUOTA if code == "insufficient_quota" else ModelErrorKind.RATE_LIMITED
    if status >= 500:
        return ModelErrorKind.SERVER_ERROR
    if status in (400, 413, 422):
        return ModelErrorKind.BAD_REQUEST
    return ModelErrorKind.UNKNOWN


def _error_code(body: object) -> str:
    """The error code in an error body, whatever shape the endpoint chose (OpenAI, Azure, Ollama...)."""
    if not isinstance(body, dict):
        return ""
    inner = body.get("error")
    code = body.get("code") or (inner.get("code") if isinstance(inner, dict) else None)
    return str(code)[:80] if isinstance(code, str | int) else ""


def _kind_of(exc: BaseException) -> tuple[ModelErrorKind, str]:
    import openai  # the SDK under langchain-openai; its errors carry the HTTP status

    if isinstance(exc, openai.APITimeoutError):  # subclass of APIConnectionError: test first
        return ModelErrorKind.TIMEOUT, "no answer within the timeout"
    if isinstance(exc, openai.APIConnectionError):
        return ModelErrorKind.CONNECTION, "could not connect"
    if isinstance(exc, openai.APIStatusError):
        code = _error_code(exc.body)
        return _status_kind(exc.status_code, code), f"HTTP {exc.status_code}" + (f" ({code})" if code else "")
    if isinstance(exc, TimeoutError):
        return ModelErrorKind.TIMEOUT, "no answer within the timeout"
    if isinstance(exc, ConnectionError):
        return ModelErrorKind.CONNECTION, "could not connect"
    return ModelErrorKind.UNKNOWN, type(exc).__name__


def key_test_command(settings: Settings) -> str:
    """A curl line that lists the models with the key, as the endpoint expects it (no key in it)."""
    base = public_endpoint(settings.openai_api_base).rstrip("/")
    if settings.provider is Provider.AZURE:
        parts = urlsplit(base)
        url = f"{parts.scheme}://{parts.netloc}/openai/models?api-version={settings.openai_api_version}"
        return f'curl "{url}" -H "api-key: $OPENAI_API_KEY"'
    return f'curl {base}/models -H "Authorization: Bearer $OPENAI_API_KEY"'


def _fix(kind: ModelErrorKind, settings: Settings) -> str:
    base = public_endpoint(settings.openai_api_base)
    azure = settings.provider in (Provider.AZURE, Provider.AZURE_V1)
    model_word = "deployment" if azure else "model"
    fixes = {
        ModelErrorKind.AUTHENTICATION: (
            "check OPENAI_API_KEY is complete and current"
            + (" (Azure: Key 1 from 'Keys and Endpoint' of the resource)" if azure else "")
            + (" (OpenAI keys start with sk-)" if settings.provider is Provider.OPENAI else "")
            + f"; test it with: {key_test_command(settings)}"
        ),
        ModelErrorKind.PERMISSION: "the key may not use this model: check the key's project/permissions",
        ModelErrorKind.MODEL_NOT_FOUND: (
            f"{model_word} {settings.openai_model!r} was not found at {base}: "
            + (
                "on Azure OPENAI_MODEL is the deployment name, not the model name"
                if azure
                else f"list the models with curl {base.rstrip('/')}/models and set OPENAI_MODEL; "
                "an OpenAI-compatible base usually ends with /v1 (Ollama: http://localhost:11434/v1)"
            )
        ),
        ModelErrorKind.QUOTA: "the account has no quota left: check the balance and billing of the key",
        ModelErrorKind.RATE_LIMITED: "the endpoint is rate limiting: slow down, raise the limits, "
        "or raise OPENAI_MAX_RETRIES",
        ModelErrorKind.TIMEOUT: f"raise OPENAI_TIMEOUT (now {settings.openai_timeout:g} s; local models "
        f"can be slow) and check that {base} answers",
        ModelErrorKind.CONNECTION: f"check OPENAI_API_BASE ({base}), that the server is running "
        "(ollama serve / vLLM) and reachable from this machine, and any proxy settings",
        ModelErrorKind.SERVER_ERROR: f"the endpoint {base} failed on its side: retry later, check its status",
        ModelErrorKind.BAD_REQUEST: "the endpoint refused the request: the prompt may exceed the model's "
        "context, or the model may not support chat completions",
        ModelErrorKind.UNKNOWN: "see the exception type; run with LOG_LEVEL=DEBUG for details",
    }
    return fixes[kind]


def classify_model_error(exc: BaseException, settings: Settings) -> ModelError:
    try:
        kind, detail = _kind_of(exc)
    except Exception:  # a classification bug must never cost the person their notice
        kind, detail = ModelErrorKind.UNKNOWN, type(exc).__name__
    cause = f"{kind.value}: {detail} from {public_endpoint(settings.openai_api_base)}"
    return ModelError(kind, cause=cause, fix=_fix(kind, settings))
