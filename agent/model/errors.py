"""Turn a failed model call into a ModelError: a kind for the person, a cause and a fix for operators
(in English for the log, in Chinese for `dingbot doctor` and alerts in DingTalk).

The fixes follow the troubleshooting list of the user's guide (key, base URL, model name, network,
balance). Nothing here prints a key: only the endpoint's scheme, host, port and path.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from agent.errors import ModelError, ModelErrorKind
from agent.network import Reason, describe_failure
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


KIND_ZH = {
    ModelErrorKind.AUTHENTICATION: "认证失败",
    ModelErrorKind.PERMISSION: "没有权限",
    ModelErrorKind.MODEL_NOT_FOUND: "模型不存在",
    ModelErrorKind.QUOTA: "额度已用完",
    ModelErrorKind.RATE_LIMITED: "请求被限流",
    ModelErrorKind.TIMEOUT: "超时",
    ModelErrorKind.CONNECTION: "连接失败",
    ModelErrorKind.SERVER_ERROR: "服务端错误",
    ModelErrorKind.BAD_REQUEST: "请求被拒绝",
    ModelErrorKind.UNKNOWN: "未知错误",
}


def _fix_zh(kind: ModelErrorKind, settings: Settings) -> str:
    base = public_endpoint(settings.openai_api_base)
    azure = settings.provider in (Provider.AZURE, Provider.AZURE_V1)
    if kind is ModelErrorKind.AUTHENTICATION:
        return (
            "检查 OPENAI_API_KEY 是否完整且有效"
            + ("（Azure：资源“密钥和终结点”页面中的 Key 1）" if azure else "")
            + ("（OpenAI 的密钥以 sk- 开头）" if settings.provider is Provider.OPENAI else "")
            + f"；可用 {key_test_command(settings)} 验证"
        )
    if kind is ModelErrorKind.MODEL_NOT_FOUND:
        if azure:
            return f"Azure 上 OPENAI_MODEL 是部署名称，不是模型名称（当前 {settings.openai_model!r}）"
        return (
            f"用 curl {base.rstrip('/')}/models 列出模型并设置 OPENAI_MODEL；"
            "OpenAI 兼容的地址通常以 /v1 结尾（Ollama：http://localhost:11434/v1）"
        )
    fixes = {
        ModelErrorKind.PERMISSION: "该密钥可能无权使用这个模型：检查密钥所属项目及权限",
        ModelErrorKind.QUOTA: "账户额度已用完：检查该密钥的余额和账单",
        ModelErrorKind.RATE_LIMITED: "端点正在限流：降低频率、提高限额，或调大 OPENAI_MAX_RETRIES",
        ModelErrorKind.TIMEOUT: f"调大 OPENAI_TIMEOUT（当前 {settings.openai_timeout:g} 秒；"
        f"本地模型可能较慢），并确认 {base} 能应答",
        ModelErrorKind.CONNECTION: f"检查 OPENAI_API_BASE（{base}）是否正确、服务是否在运行"
        "（ollama serve / vLLM）且本机可达，以及代理设置",
        ModelErrorKind.SERVER_ERROR: f"端点 {base} 自身出错：稍后重试，查看其服务状态",
        ModelErrorKind.BAD_REQUEST: "端点拒绝了请求：提示词可能超出模型上下文，或该模型不支持对话补全",
        ModelErrorKind.UNKNOWN: "查看异常类型；用 LOG_LEVEL=DEBUG 运行以获得详情",
    }
    return fixes[kind]


_CONTEXT_WORDS = ("context length", "context_length", "maximum context", "context size", "context window")


def _said(exc: BaseException) -> str:
    """The endpoint's error message, whatever shape its body has (never a key: it is the server's text)."""
    body = getattr(exc, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else body
    message = inner.get("message") if isinstance(inner, dict) else inner
    return (message if isinstance(message, str) else str(getattr(exc, "message", "")))[:300]


def classify_model_error(exc: BaseException, settings: Settings) -> ModelError:
    base = public_endpoint(settings.openai_api_base)
    try:
        kind, detail = _kind_of(exc)
    except Exception:  # a classification bug must never cost the person their notice
        kind, detail = ModelErrorKind.UNKNOWN, type(exc).__name__
    zh = KIND_ZH[kind]
    if kind is ModelErrorKind.CONNECTION:
        failure = describe_failure(exc, settings.openai_api_base, "OPENAI_API_BASE")
        local = settings.provider is Provider.LOCAL and failure.reason is Reason.REFUSED
        return ModelError(
            kind,
            cause=f"connection: could not connect to {base}: {failure.detail}",
            fix=failure.fix + (" (ollama serve / vLLM)" if local else ""),
            cause_zh=f"{zh}：无法连接到 {base}：{failure.detail_zh}",
            fix_zh=failure.fix_zh + ("（ollama serve / vLLM）" if local else ""),
        )
    if kind is ModelErrorKind.TIMEOUT:
        cause, cause_zh = f"timeout: no answer from {base} in time", f"{zh}：{base} 没有及时应答"
    elif detail.startswith("HTTP "):
        cause, cause_zh = f"{kind.value}: {detail} from {base}", f"{zh}：{base} 返回 {detail}"
    else:
        cause, cause_zh = f"{kind.value}: {detail} from {base}", f"{zh}：{detail}（{base}）"
    said = _said(exc)
    context = kind is ModelErrorKind.BAD_REQUEST and (
        "context_length_exceeded" in cause or any(word in said.lower() for word in _CONTEXT_WORDS)
    )
    fix = "the prompt was longer than the model's context: set MODEL_CONTEXT_TOKENS to it" if context else ""
    return ModelError(
        kind,
        cause=cause,
        fix=fix or _fix(kind, settings),
        cause_zh=cause_zh,
        fix_zh=_fix_zh(kind, settings),
        context_exceeded=context,
        said=said,
    )
