"""Chinese texts for `dingbot doctor`: the cause and the fix of a classified model error, in the words
of agent/model/errors.py (which gives them in English, for the log)."""

from __future__ import annotations

from agent.errors import ModelError, ModelErrorKind
from agent.model.errors import key_test_command, public_endpoint
from agent.settings.choices import Provider
from agent.settings.config import Settings

MOCK_SKIP = (
    "mock mode (FORCE_MOCK_OPENAI=1): the built-in mock model answers, no model endpoint is used",
    "Mock 模式（FORCE_MOCK_OPENAI=1）：由内置 Mock 模型回答，不使用模型端点",
)

_KIND_ZH = {
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


def model_error_zh(error: ModelError, settings: Settings) -> tuple[str, str]:
    """(cause, fix) in Chinese for a ModelError from classify_model_error."""
    base = public_endpoint(settings.openai_api_base)
    detail = error.cause.removeprefix(f"{error.kind.value}: ").removesuffix(f" from {base}")
    if detail.startswith("HTTP "):
        return f"{_KIND_ZH[error.kind]}：{base} 返回 {detail}", _fix_zh(error.kind, settings)
    detail = detail.replace("no answer within the timeout", "超时未应答").replace(
        "could not connect", "无法连接"
    )
    return f"{_KIND_ZH[error.kind]}：{detail}（{base}）", _fix_zh(error.kind, settings)
