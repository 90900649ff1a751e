"""`dingbot doctor`'s checks of the model endpoint (the user guide's troubleshooting list as code), and
the `Check` every doctor check answers: a status, what was found, and the cause and the fix in English
and Chinese. No DingTalk, no HTTP server here (docs/architecture.md: agent/ imports neither). The memory and
storage checks are in agent/diagnostics/memory.py.

The checks go through the service's own code where it matters: `build_chat_model` for the one-token
completion and `classify_model_error` for the cause and the fix. `GET /models` is a direct httpx call.
"""

from __future__ import annotations

import difflib
import re
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

from agent.diagnostics.checks import Check, Status, mask, ms, new_check
from agent.errors import ModelError, ModelErrorKind
from agent.model.errors import classify_model_error, public_endpoint
from agent.settings.choices import Provider
from agent.settings.config import Settings

MOCK_SKIP = (
    "mock mode (FORCE_MOCK_OPENAI=1): the built-in mock model answers, no model endpoint is used",
    "Mock 模式（FORCE_MOCK_OPENAI=1）：由内置 Mock 模型回答，不使用模型端点",
)
PROBE_TIMEOUT_SECONDS = 5.0  # GET /models and other plain HTTP probes
# Keys copied from examples and guides, whole: sk-xxx, sk-xxx-yyy-zzz, sk-your-api-key-here, your_api_key,
# YOUR_OPENAI_KEY, <your-azure-key>, xxxxxx, changeme. A real key that merely starts alike is not one.
_PLACEHOLDER = re.compile(
    r"^(?:sk-x+(?:-y+-z+)?|sk-your-[\w-]*-here"
    r"|(?:your|my)[-_ ]?(?:openai[-_ ]?|azure[-_ ]?)?(?:api[-_ ]?)?key(?:[-_ ]?here)?"
    r"|<[^<>]*>|x{3,}|\.{3}|…|changeme|placeholder|(?:api[-_]?)?key[-_]?here)$",
    re.IGNORECASE,
)
_MODEL_NAME = re.compile(r"^(gpt-|o\d|chatgpt|text-embedding|dall-e|whisper|tts-)", re.IGNORECASE)


def explain(check: Check, error: ModelError, settings: Settings) -> Check:
    return check.failed(error.cause, error.cause_zh or error.cause, error.fix, error.fix_zh or error.fix)


# --- the model -------------------------------------------------------------------------------------


def check_key(settings: Settings) -> Check:
    check = new_check("model.key", "API key present and plausible", "API 密钥已设置且格式合理")
    if settings.mock_mode:
        return check.skipped(*MOCK_SKIP)
    raw = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    if not raw.strip():
        return check.failed(
            "OPENAI_API_KEY is not set",
            "没有设置 OPENAI_API_KEY",
            "set OPENAI_API_KEY (any value for Ollama/vLLM), or FORCE_MOCK_OPENAI=1 for the mock model",
            "设置 OPENAI_API_KEY（Ollama/vLLM 可填任意值），或设置 FORCE_MOCK_OPENAI=1 使用内置 Mock 模型",
        )
    provider = settings.provider
    check.detail = mask(raw) if len(raw) < 12 else f"{mask(raw)} ({len(raw)} chars)"
    if raw != raw.strip() or raw.startswith(("'", '"', "Bearer ")) or not raw.isascii() or " " in raw:
        return check.failed(
            "OPENAI_API_KEY has spaces, quotes, a 'Bearer ' prefix or non-ASCII characters (copy-paste?)",
            "OPENAI_API_KEY 含有空格、引号、“Bearer ”前缀或非 ASCII 字符（多半是复制粘贴出错）",
            "set OPENAI_API_KEY to the key alone, exactly as issued",
            "OPENAI_API_KEY 只填密钥本身，与签发时完全一致",
        )
    if _PLACEHOLDER.search(raw) and provider is not Provider.LOCAL:  # a local server takes any value
        return check.failed(
            "OPENAI_API_KEY is a placeholder from an example (e.g. sk-xxx, your_…), not a real key",
            "OPENAI_API_KEY 是示例里的占位符（如 sk-xxx、your_…），不是真实的密钥",
            "set OPENAI_API_KEY to the key you were issued (any value for Ollama/vLLM, e.g. local)",
            "把 OPENAI_API_KEY 设为你拿到的真实密钥（Ollama/vLLM 可填任意值，例如 local）",
        )
    if provider is Provider.OPENAI and not raw.startswith("sk-"):
        return check.failed(
            "OPENAI_API_BASE is OpenAI's, but OPENAI_API_KEY does not start with sk-",
            "OPENAI_API_BASE 指向 OpenAI，但 OPENAI_API_KEY 不是以 sk- 开头",
            "use a key from https://platform.openai.com/api-keys (sk-...), or point OPENAI_API_BASE at the "
            "endpoint this key belongs to",
            "使用 https://platform.openai.com/api-keys 上创建的密钥（sk-...），"
            "或把 OPENAI_API_BASE 改成该密钥所属的端点",
        )
    if provider in (Provider.AZURE, Provider.AZURE_V1) and raw.startswith("sk-"):
        check.warned(
            "this looks like an OpenAI key (sk-...), but OPENAI_API_BASE is an Azure resource",
            "这看起来是 OpenAI 的密钥（sk-...），但 OPENAI_API_BASE 是 Azure 资源",
            "use Key 1 from the Azure resource's 'Keys and Endpoint' page",
            "使用 Azure 资源“密钥和终结点”页面中的 Key 1",
        )
    elif provider is Provider.LOCAL:
        check.detail += "; a local endpoint accepts any value"
    return check


@dataclass
class _Answer:
    """One GET of a model list."""

    url: str  # without query: safe to show
    response: httpx.Response | None = None
    error: httpx.HTTPError | None = None
    elapsed_ms: float = 0.0

    @property
    def status(self) -> int:
        return self.response.status_code if self.response is not None else 0

    def body(self) -> Any:
        try:
            return self.response.json() if self.response is not None else None
        except ValueError:
            return None

    def models(self) -> list[str] | None:
        """The model ids of an OpenAI-style list (or Ollama's own), or None when this is not one."""
        body = self.body()
        if self.status != 200 or not isinstance(body, dict):
            return None
        items = body.get("data", body.get("models"))
        if not isinstance(items, list):
            return None
        return [
            str(i.get("id") or i.get("name"))
            for i in items
            if isinstance(i, dict) and (i.get("id") or i.get("name"))
        ]


def is_azure(settings: Settings) -> bool:
    return settings.provider in (Provider.AZURE, Provider.AZURE_V1)


def _list_models(settings: Settings, base: str, *, with_key: bool) -> _Answer:
    parts = urlsplit(base)
    params: dict[str, str] = {}
    if settings.provider is Provider.AZURE:  # the data plane lists models (not deployments) here
        url, params = (
            f"{parts.scheme}://{parts.netloc}/openai/models",
            {"api-version": settings.openai_api_version},
        )
    else:
        url = base.rstrip("/") + "/models"
    headers: dict[str, str] = {}
    if with_key and settings.openai_api_key is not None:
        key = settings.openai_api_key.get_secret_value()
        headers = (
            {"api-key": key} if settings.provider is Provider.AZURE else {"Authorization": f"Bearer {key}"}
        )
    started = time.perf_counter()
    timeout = httpx.Timeout(min(PROBE_TIMEOUT_SECONDS, settings.openai_timeout), connect=3.0)
    # httpx drops Authorization on a redirect to another host, but not Azure's api-key header.
    follow = settings.provider is not Provider.AZURE
    try:
        with httpx.Client(timeout=timeout, follow_redirects=follow) as client:
            response = client.get(url, params=params, headers=headers)
    except httpx.HTTPError as exc:
        return _Answer(public_endpoint(url), error=exc, elapsed_ms=ms(started))
    return _Answer(public_endpoint(url), response=response, elapsed_ms=ms(started))


def _status_error(answer: _Answer, settings: Settings) -> ModelError:
    """The same classification the service gives a failed call, for a plain HTTP answer."""
    import openai

    assert answer.response is not None
    body = answer.body()
    inner = body.get("error", body) if isinstance(body, dict) else body
    error = openai.APIStatusError(f"HTTP {answer.status}", response=cast(Any, answer.response), body=inner)
    return classify_model_error(error, settings)


def _transport_error(exc: httpx.HTTPError, settings: Settings) -> ModelError:
    """The classification a model call gets, for a plain request that never got an answer: the cause
    chain is kept, so a DNS failure or a refused connection is named as such."""
    plain = TimeoutError() if isinstance(exc, httpx.TimeoutException) else ConnectionError()
    plain.__cause__ = exc
    return classify_model_error(plain, settings)


def _better_base(settings: Settings) -> str | None:
    """Where the API probably is when the base itself has no model list: with /v1, or without a pasted
    /chat/completions. None when the base already ends with /v1 (or is Azure's)."""
    if is_azure(settings):
        return None
    path = urlsplit(settings.openai_api_base).path.rstrip("/")
    base = settings.openai_api_base.rstrip("/")
    if path.endswith("/chat/completions"):
        return base.removesuffix("/chat/completions")
    if path.endswith("/v1"):
        return None
    return base + "/v1"


@dataclass
class ModelFindings:
    """What later checks (embeddings) need to know: skip them, and why."""

    blocked: tuple[str, str] | None = None  # (reason, reason in Chinese) when the endpoint cannot be used


def model_checks(
    settings: Settings, *, timeout: float, complete: bool = True
) -> tuple[list[Check], ModelFindings]:
    """The endpoint checks in order. `complete=False` (the service's startup check) stops before the
    one-token completion: base reachable, key accepted, model listed (on Azure, whose deployments are
    not listed, the first answer tells)."""
    key = check_key(settings)
    endpoint = new_check("model.endpoint", "base URL reachable", "接口地址可达")
    auth = new_check("model.auth", "endpoint accepts the key", "端点接受该密钥")
    azure = is_azure(settings)
    if azure:
        listed = new_check("model.listed", f"deployment {settings.openai_model!r} answers", "部署可用")
    else:
        listed = new_check(
            "model.listed", f"GET /models lists {settings.openai_model!r}", "模型列表包含该模型"
        )
    completion = new_check("model.completion", "one-token chat completion", "单 token 对话补全")
    checks = [key, endpoint, auth, listed, completion]
    if settings.mock_mode:
        for check in checks[1:]:
            check.skipped(*MOCK_SKIP)
        return checks, ModelFindings(blocked=MOCK_SKIP)

    key_usable = key.status is not Status.FAIL
    answer = _list_models(settings, settings.openai_api_base, with_key=key_usable)
    endpoint.elapsed_ms = answer.elapsed_ms
    if isinstance(answer.error, httpx.TimeoutException):  # the probe's own limit, not OPENAI_TIMEOUT
        waited = min(PROBE_TIMEOUT_SECONDS, settings.openai_timeout)
        endpoint.failed(
            f"timeout: GET {answer.url} did not answer within {waited:g} s",
            f"超时：GET {answer.url} 在 {waited:g} 秒内没有应答",
            f"check that the server behind OPENAI_API_BASE is up and not overloaded (a model still loading "
            f"answers slowly), and that {public_endpoint(settings.openai_api_base)} is its address",
            f"检查 OPENAI_API_BASE 后面的服务是否在运行、是否过载（模型加载中会很慢），以及 "
            f"{public_endpoint(settings.openai_api_base)} 是否是它的地址",
        )
    elif answer.error is not None:
        explain(endpoint, _transport_error(answer.error, settings), settings)
    if answer.error is not None:
        endpoint.detail = f"{type(answer.error).__name__}: {str(answer.error)[:120]}"
        reason = ("the base URL is not reachable", "接口地址不可达")
        for check in (auth, listed, completion):
            check.skipped(*reason)
        return checks, ModelFindings(blocked=reason)
    endpoint.detail = f"{answer.url} answered HTTP {answer.status} in {answer.elapsed_ms:.0f} ms"

    better = _better_base(settings) if answer.models() is None and answer.status not in (401, 403) else None
    moved = _list_models(settings, better, with_key=key_usable) if better else None
    if (
        better
        and moved
        and moved.error is None
        and (moved.models() is not None or moved.status in (401, 403))
    ):
        base, lacks = public_endpoint(better), " (it lacks /v1)" if better.endswith("/v1") else ""
        listed.failed(
            f"{answer.url} answers HTTP {answer.status}, but {moved.url} is the API: OPENAI_API_BASE is "
            f"wrong{lacks}",
            f"{answer.url} 返回 HTTP {answer.status}，而 {moved.url} 才是 API：OPENAI_API_BASE 填错了"
            + ("（缺少 /v1）" if lacks else ""),
            f"set OPENAI_API_BASE={base}",
            f"设置 OPENAI_API_BASE={base}",
        )
        answer = moved
    if not key_usable:
        auth.skipped("no usable OPENAI_API_KEY", "没有可用的 OPENAI_API_KEY")
    elif answer.status in (401, 403):
        explain(auth, _status_error(answer, settings), settings)
    else:
        auth.detail = f"HTTP {answer.status}"
    if auth.status is not Status.OK or listed.status is Status.FAIL:
        reason = (
            ("the key was refused", "密钥被拒绝")
            if auth.status is Status.FAIL
            else ("no usable OPENAI_API_KEY", "没有可用的 OPENAI_API_KEY")
            if auth.status is Status.SKIP
            else ("fix OPENAI_API_BASE first (see above)", "请先修正 OPENAI_API_BASE（见上）")
        )
        if listed.status is not Status.FAIL:
            listed.skipped(*reason)
        completion.skipped(*reason)
        return checks, ModelFindings(blocked=reason)

    models = answer.models()
    unlisted = not azure and not _judge_listing(listed, answer, models, settings)
    if not complete:
        completion.skipped("not asked for", "未要求")
        if azure:
            listed.skipped(
                "Azure lists no deployments: the first answer tells", "Azure 不列出部署：以首次回答为准"
            )
        return checks, ModelFindings()
    error = _complete(completion, settings, timeout)
    if azure:
        _judge_deployment(listed, error, models, settings)
    elif unlisted and error is None:
        listed.status = Status.WARN  # not listed, yet it answers: an alias, or a list that is incomplete
        listed.detail += "; it answers all the same (an alias?)"
    return checks, ModelFindings()


def _judge_listing(listed: Check, answer: _Answer, models: list[str] | None, settings: Settings) -> bool:
    """False when the list leaves the model out."""
    model = settings.openai_model
    if models is None:
        listed.warned(
            f"{answer.url} answers HTTP {answer.status}, but with no OpenAI-style model list",
            f"{answer.url} 返回 HTTP {answer.status}，但不是 OpenAI 格式的模型列表",
            "nothing to do if the completion below works; else check OPENAI_API_BASE",
            "若下面的对话补全成功则无需处理；否则检查 OPENAI_API_BASE",
        )
        return True
    if model in models or f"{model}:latest" in models:
        listed.detail = f"listed among {len(models)} model(s)"
        return True
    chat = [m for m in models if "embed" not in m.lower()] or models  # embedding models cannot chat
    shown = ", ".join(difflib.get_close_matches(model, chat, n=5, cutoff=0.3) or chat[:8]) or "(none)"
    listed.detail = f"{len(models)} model(s) listed"
    listed.failed(
        f"model {model!r} does not exist at {public_endpoint(settings.openai_api_base)}: it is not among "
        f"the {len(models)} model(s) GET /models lists",
        f"模型 {model!r} 在 {public_endpoint(settings.openai_api_base)} 不存在：GET /models 列出的 "
        f"{len(models)} 个模型里没有它",
        f"set OPENAI_MODEL to a listed model, e.g. {shown}",
        f"把 OPENAI_MODEL 设为列表中的模型，例如 {shown}",
    )
    return False


def _complete(check: Check, settings: Settings, timeout: float) -> ModelError | None:
    """One token through the service's own chat model; the classified error when it fails."""
    from langchain_core.messages import HumanMessage

    from agent.model.factory import build_chat_model

    waited = min(settings.openai_timeout, timeout)
    quick = settings.model_copy(update={"openai_timeout": waited, "openai_max_retries": 0})
    model = build_chat_model(quick, mock_reply_template="", max_tokens=1)  # capped for servers that ignore
    started = time.perf_counter()
    try:
        model.invoke([HumanMessage("ping")])  # max_completion_tokens: it sends max_tokens too
    except Exception as exc:
        check.elapsed_ms = ms(started)
        error = classify_model_error(exc, settings)
        explain(check, error, settings)
        if error.kind is ModelErrorKind.TIMEOUT:
            check.cause += f" (the doctor waited {waited:g} s; --timeout changes that)"
            check.cause_zh += f"（doctor 等待了 {waited:g} 秒；可用 --timeout 调整）"
        return error
    check.elapsed_ms = ms(started)
    check.detail = f"answered in {check.elapsed_ms:.0f} ms"
    if check.elapsed_ms > settings.openai_timeout * 1000 / 2:
        check.warned(
            f"one token took {check.elapsed_ms / 1000:.1f} s, over half of OPENAI_TIMEOUT",
            f"一个 token 用了 {check.elapsed_ms / 1000:.1f} 秒，超过 OPENAI_TIMEOUT 的一半",
            f"raise OPENAI_TIMEOUT (now {settings.openai_timeout:g} s) or use a faster model",
            f"调大 OPENAI_TIMEOUT（当前 {settings.openai_timeout:g} 秒）或换更快的模型",
        )
    return None


def _judge_deployment(
    listed: Check, error: ModelError | None, models: list[str] | None, settings: Settings
) -> None:
    if error is None:
        listed.detail = "the one-token completion below reached it"
        return
    if error.kind is not ModelErrorKind.MODEL_NOT_FOUND:
        listed.skipped("the completion failed for another reason (below)", "对话补全因其他原因失败（见下）")
        return
    name = settings.openai_model
    is_model_name = bool(_MODEL_NAME.match(name)) or (models is not None and name in models)
    listed.failed(
        f"deployment {name!r} does not exist on this Azure resource"
        + (f": {name!r} is a model name, not a deployment name" if is_model_name else ""),
        f"该 Azure 资源上没有名为 {name!r} 的部署"
        + (f"：{name!r} 是模型名称，不是部署名称" if is_model_name else ""),
        "on Azure OPENAI_MODEL is the deployment name you chose when deploying the model (Azure portal → "
        "the resource → Model deployments), not the model name",
        "Azure 上 OPENAI_MODEL 要填部署模型时起的部署名称（Azure 门户 → 资源 → 模型部署），不是模型名称",
    )
