"""Settings: every environment variable DingHook reads, with defaults and validation.

The names are a public contract: the seed's names keep the seed's meaning. Every field carries its
description; docs/settings.md and .env.example are generated from them (`dingbot settings`). Nothing else
in the code reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.settings.choices import (
    DingTalkMode,
    EmbeddingProvider,
    ImageSupport,
    LogLevel,
    Provider,
    ReplyStyle,
)
from agent.settings.field import setting

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_PROMPTS_DIR = PROJECT_ROOT / "prompts"


class Settings(BaseSettings):
    """All configuration, from the environment or a `.env` file in the working directory."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
    )

    openai_api_key: SecretStr | None = setting(
        None,
        "必需（Mock 模式除外）；Ollama/vLLM 可填任意值",
        "required unless mock mode; any value for Ollama/vLLM",
        section="模型 / Model",
    )
    openai_api_base: str = setting(
        "https://api.openai.com/v1",
        "任意 OpenAI 兼容端点；`https://<资源名>.openai.azure.com/` 表示 Azure，"
        "Ollama `http://localhost:11434/v1`，vLLM `http://localhost:8000/v1`",
        "any OpenAI-compatible base; `https://<res>.openai.azure.com/` means Azure, "
        "Ollama `http://localhost:11434/v1`, vLLM `http://localhost:8000/v1`",
    )
    openai_model: str = setting(
        "gpt-4-turbo", "模型名；Azure 上是部署名称", "model name; on Azure the deployment name"
    )
    force_mock_openai: bool = setting(
        False,
        "`1`/`true`/`yes`：内置 Mock 模型，无需 Key、不联网",
        "`1`/`true`/`yes`: the built-in mock model, no key, no network",
    )
    openai_timeout: float = setting(60.0, "每次模型调用最多等待的秒数", "seconds per model call", gt=0)
    openai_max_retries: int = setting(
        2,
        "连接被拒、429 和 5xx 时的重试次数（超时不重试：服务端可能还在算，重试只会加倍负载）",
        "retries on refused connections, 429 and 5xx (never on timeouts: the server may still be working)",
        ge=0,
        le=10,
    )
    openai_api_version: str = setting(
        "2024-10-21", "Azure 的 api-version（仅部署路径）", "Azure api-version (deployments path only)"
    )
    max_tokens: int = setting(
        1000,
        "一次回答最多生成的 token 数；超出时回答被截断并注明",
        "the most tokens one answer may generate; a longer one is cut, with a note",
        ge=16,
        le=100_000,
    )
    model_context_tokens: int | None = setting(
        None,
        "模型的上下文长度（token）；不设置时从服务端探测（llama.cpp、vLLM），否则按 8192",
        "the model's context length in tokens; unset: probed from the server (llama.cpp, vLLM), else 8192",
        shown="probed",
        fix="leave it unset (probed), or give the model's context length, e.g. MODEL_CONTEXT_TOKENS=8192",
        ge=512,
        le=10_000_000,
    )

    embedding_provider: EmbeddingProvider = setting(
        EmbeddingProvider.OPENAI,
        "`openai`：与聊天模型同一端点和 Key；`local`：内置离线多语言嵌入（Mock 模式总是 `local`）",
        "`openai`: the chat endpoint and key; `local`: the bundled offline multilingual embedder "
        "(always in mock mode)",
        section="长期记忆 / Long-term memory",
    )
    embedding_model: str = setting(
        "text-embedding-3-small",
        "嵌入模型（Azure 上是部署名称）",
        "embedding model (on Azure its deployment name)",
    )
    embedding_dims: int | None = setting(
        None,
        "向量维度；与已存储的记忆不符时拒绝启动",
        "vector size; checked against the stored memories",
        shown="probed",
        fix="leave it unset (probed), or give the embedder's vector size, e.g. EMBEDDING_DIMS=1536",
        ge=8,
        le=8192,
    )
    qdrant_url: str | None = setting(
        None,
        "使用 Qdrant 服务器而不是 `DATABASE_PATH` 旁的本地文件夹",
        "a Qdrant server instead of the embedded folder beside `DATABASE_PATH`",
        fix="use a full http(s) URL of a Qdrant server, e.g. QDRANT_URL=http://localhost:6333",
    )
    chroma_url: str | None = setting(
        None,
        "使用 Chroma 服务器（`chroma run`）存长期记忆；多个副本共用时必须设置它或 `QDRANT_URL`",
        "a Chroma server (`chroma run`) for long-term memory; replicas need it or `QDRANT_URL`",
        fix="use a full http(s) URL of a Chroma server, e.g. CHROMA_URL=http://127.0.0.1:8000",
    )
    memory_top_k: int = setting(5, "每次回复最多召回几条记忆", "memories recalled per reply", ge=0, le=50)
    memory_max_chars: int = setting(
        1500, "提示词中记忆文本的总长度上限", "cap on recalled memory text in a prompt", ge=0, le=20000
    )
    memory_timeout: float = setting(
        10.0,
        "记忆检索或写入的超时秒数，超时则不带记忆继续",
        "seconds for a memory search or write before going on without it",
        gt=0,
    )

    secret: SecretStr | None = setting(
        None,
        "机器人的签名密钥：校验回调并给自定义机器人 webhook 加签（应用机器人即 AppSecret）",
        "the robot's signing secret: verifies callbacks and signs custom-robot webhook sends "
        "(an app robot's AppSecret)",
        section="钉钉 / DingTalk",
    )
    access_token: SecretStr | None = setting(
        None,
        "自定义机器人 webhook 的 access_token：主动推送（`dingbot notify`）和给运维的告警",
        "custom-robot webhook token: proactive notices (`dingbot notify`) and operator alerts",
    )
    dingtalk_client_id: str | None = setting(
        None,
        "应用的 AppKey：`sessionWebhook` 过期后的 OpenAPI 发送、Stream 模式、AI 卡片",
        "the app's AppKey: the OpenAPI send once a session webhook expired, Stream mode, AI cards",
    )
    dingtalk_client_secret: SecretStr | None = setting(
        None,
        "应用的 AppSecret；未设 `SECRET` 时也用它校验回调",
        "the app's AppSecret; also verifies callbacks when `SECRET` is unset",
    )
    dingtalk_robot_secret: SecretStr | None = setting(
        None,
        "自定义机器人 webhook 的加签密钥（与 `SECRET` 不同时）",
        "the custom-robot webhook's signing secret, when it differs from `SECRET`",
        shown="= SECRET",
    )
    dingtalk_outgoing_token: SecretStr | None = setting(
        None,
        "自定义机器人 Outgoing 的 token：请求头 `token` 与它相同即代替签名",
        "custom-robot Outgoing token: accepted in the `token` header instead of a signature",
    )
    dingtalk_sign_window_seconds: float = setting(
        3600.0, "回调时间戳允许的偏差秒数", "accepted clock skew of callback timestamps", gt=0, le=3600
    )
    dingtalk_oapi_base: str = setting(
        "https://oapi.dingtalk.com",
        "钉钉 webhook 主机；`sessionWebhook` 必须在它或 `DINGTALK_API_BASE` 上",
        "DingTalk's webhook host; session webhooks must be on it or on `DINGTALK_API_BASE`",
    )
    dingtalk_api_base: str = setting(
        "https://api.dingtalk.com", "钉钉 OpenAPI 主机", "DingTalk's OpenAPI host"
    )
    dingtalk_mode: DingTalkMode = setting(
        DingTalkMode.HTTP,
        "`http`：回调发到 `/dingtalk/callback`（需要公网地址）；`stream`：服务主动连钉钉的 WebSocket，"
        "不需要公网地址（需要应用凭证）；`both` 两者同时",
        "`http`: callbacks at `/dingtalk/callback` (a public URL); `stream`: a WebSocket to DingTalk, "
        "no public URL (app credentials); `both`",
    )
    dingtalk_stream_heartbeat_seconds: float = setting(
        20.0, "Stream：WebSocket 心跳间隔，发现断开的连接", "Stream: WebSocket ping interval", ge=1, le=300
    )
    dingtalk_stream_idle_seconds: float = setting(
        180.0,
        "Stream：这么久收不到网关的任何帧就重连",
        "Stream: no frame from the gateway this long means reconnect",
        ge=5,
        le=3600,
    )
    dingtalk_card_template_id: str | None = setting(
        None,
        "AI 卡片模板 id：回答像打字一样出现在卡片里（需要应用凭证）",
        "AI card template: answers stream into a card (needs the app credentials)",
    )
    dingtalk_reply_style: ReplyStyle = setting(
        ReplyStyle.CARD,
        "`card`：有模板和应用凭证时用 AI 卡片；`plain`：总是普通文本/Markdown 消息",
        "`card`: AI cards when a template and credentials are set; `plain`: text/Markdown always",
    )
    dingtalk_robot_code: str | None = setting(
        None,
        "设置后，发给其他机器人（`robotCode`）的回调返回 403；也是 OpenAPI 发送的 robotCode",
        "when set, callbacks for another robot (`robotCode`) get 403; also the OpenAPI send's robotCode",
    )
    dingtalk_corp_id: str | None = setting(
        None,
        "设置后，来自其他组织（`chatbotCorpId`）的回调返回 403",
        "when set, callbacks from another organisation (`chatbotCorpId`) get 403",
    )

    host: str = setting("0.0.0.0", "监听地址", "bind address", section="服务 / Service")  # noqa: S104
    port: int = setting(8080, "HTTP 端口", "HTTP port", ge=1, le=65535)
    database_path: Path = setting(
        Path("dingbot_memory.db"),
        "SQLite 数据库（对话历史、收件箱、发件箱）；长期记忆在它旁边的 `<名字>_store/`",
        "the SQLite database (history, inbox, outbox); long-term memory sits beside it in `<name>_store/`",
    )
    database_url: SecretStr | None = setting(
        None,
        "PostgreSQL 数据库（`postgresql://用户:密码@主机:5432/库名`）；设置后所有表都在这里，多个副本可以共用，"
        "不再使用 `DATABASE_PATH`",
        "a PostgreSQL database (`postgresql://user:password@host:5432/name`) for every table, shared by "
        "replicas; when set, `DATABASE_PATH` holds no tables",
        fix="use a postgresql:// URL, e.g. DATABASE_URL=postgresql://dingbot:secret@127.0.0.1:5432/dingbot",
    )
    check_interval_seconds: float = setting(
        60.0,
        "后台检查周期：重发到期的回复、继续卡住的消息、复查模型、清理过期记录",
        "period of the background check: due replies, stuck messages, the model's state, expiry",
        gt=0,
    )
    claim_lease_seconds: float = setting(
        30.0,
        "正在回答的消息由接手的进程每隔三分之一这么久续约一次；进程死掉后，过了这么久别的副本（或它重启后）接着回答",
        "a message being answered is renewed by its process every third of this; when the process dies, "
        "another replica (or its restart) takes the work over after this long",
        ge=3,
        le=3600,
    )
    workers: int = setting(4, "同时处理的消息数", "messages answered at once", ge=1, le=64)
    ack_process: bool = setting(
        True,
        "`python -m dingbot.server` 在单独的进程里确认 HTTP 回调（存入收件箱后立即回 200），"
        "回答消息的进程再忙，确认也不变慢；其余请求由它转给服务进程",
        "`python -m dingbot.server` acks HTTP callbacks in a process of its own (stored in the inbox, then "
        "200), so acks stay fast however busy the answering process is; it passes every other request on",
    )
    retention_days: float = setting(
        30.0, "收件箱、发件箱和短期历史保留的天数", "days inbox, outbox and history rows are kept", gt=0
    )
    log_level: LogLevel = setting(
        LogLevel.INFO,
        "日志级别；消息正文只在 `DEBUG` 记录",
        "log level; message text is logged only at `DEBUG`",
    )
    operator_alerts: bool = setting(
        True,
        "设置了 `ACCESS_TOKEN` 时，把模型故障、记忆不可用、回复发不出去告诉机器人所在的群",
        "with `ACCESS_TOKEN` set, tell the robot's group when the model fails, memory is down or "
        "replies cannot be delivered",
    )
    alert_repeat_minutes: float = setting(
        60.0,
        "同一条告警最多这么多分钟发一次",
        "the same alert is sent at most once per this many minutes",
        gt=0,
    )

    max_message_chars: int = setting(
        4000,
        "更长的消息只读前这么多字，并告诉对方",
        "longer input is truncated, with a note to the person",
        section="限制与访问 / Limits and access",
        ge=1,
        le=100_000,
    )
    rate_limit_per_minute: int = setting(
        20,
        "每人每分钟最多回答几条，超出时礼貌提示（`0` 不限）",
        "messages per person per minute, answered politely beyond (`0`: no limit)",
        ge=0,
        le=10_000,
    )
    stale_message_seconds: float = setting(
        600.0,
        "比这更旧的回调（按 `createAt`）只确认、不回答",
        "older callbacks (by `createAt`) are acknowledged, not answered",
        gt=0,
    )
    allowed_users: str = setting(
        "",
        "逗号分隔的 staffId（或 senderId）；为空表示所有人",
        "comma-separated staff ids (or sender ids); empty: everyone",
    )
    allowed_groups: str = setting(
        "",
        "逗号分隔的群 conversationId；为空表示所有群",
        "comma-separated conversation ids; empty: every group",
    )

    history_turns: int = setting(
        10,
        "放进提示词的近期对话轮数",
        "short-term turns in the prompt",
        section="对话 / Conversation",
        ge=0,
        le=100,
    )
    history_tokens: int = setting(
        1000,
        "近期对话最多占多少 token（cl100k_base 计数）；更早的轮次折叠进摘要；0 表示只按轮数",
        "tokens of recent turns in the prompt (counted with cl100k_base); older turns fold into the "
        "summary; 0: by turn count only",
        ge=0,
        le=1_000_000,
    )
    prompt_token_budget: int = setting(
        2000,
        "整个提示词的 token 预算：超出时再去掉最早的几轮对话（当前消息和文件不裁剪）；0 表示不限",
        "token budget of the whole prompt: past it, more of the oldest turns are left out (never the "
        "new message or its files); 0: no budget",
        ge=0,
        le=10_000_000,
    )
    summary_tokens: int = setting(
        300,
        "滚动摘要的长度上限（token）：移出窗口的对话在回复发出后于后台折叠进每个会话的摘要；0 表示不做摘要",
        "length cap of the rolling summary: turns leaving the window are folded into a per-conversation "
        "summary in the background after the reply; 0: no summary",
        ge=0,
        le=4000,
    )
    group_shared_context: bool = setting(
        False,
        "开：群内共享一份短期历史（带发言人昵称）；关：每人一份",
        "on: one short-term history per group, with speakers' nicks; off: one per speaker",
    )
    bot_name: str = setting("小钉", "提示词里助手的名字", "the assistant's name in prompts")
    bot_timezone: str = setting(
        "Asia/Shanghai",
        "提示词中“当前时间”的时区",
        'time zone of "now" in prompts',
        fix="use an IANA time zone name, e.g. BOT_TIMEZONE=Asia/Shanghai",
    )
    prompts_dir: Path = setting(
        DEFAULT_PROMPTS_DIR,
        "提示词文件夹",
        "the prompts folder",
        shown="prompts/",
        fix="point it at a folder that holds chat.yaml (the project's prompts/ folder)",
    )

    agent_max_steps: int = setting(
        5,
        "一次回答中模型最多调用几轮工具（提醒、MCP）；`0` 关闭工具，只聊天",
        "the most tool rounds in one answer (reminders, MCP); `0` turns tools off: chat only",
        section="工具与提醒 / Tools and reminders",
        ge=0,
        le=20,
    )
    tool_timeout_seconds: float = setting(
        30.0,
        "一次工具调用最多等待的秒数（MCP 服务器可以在 `MCP_CONFIG` 里单独设置）",
        "seconds one tool call may take (an MCP server may set its own in `MCP_CONFIG`)",
        gt=0,
        le=600,
    )
    tool_result_max_chars: int = setting(
        4000,
        "工具结果交给模型前最多保留的字数（更长的截断并注明）",
        "the most characters of a tool result the model sees (longer ones are cut, with a note)",
        ge=100,
        le=100_000,
    )
    max_reminders_per_person: int = setting(
        20,
        "每人同时最多有几条未到期的提醒",
        "the most pending reminders one person may have",
        ge=1,
        le=1000,
    )
    reminder_grace_seconds: float = setting(
        21600.0,
        "服务停机错过的提醒，晚了不超过这么多秒就补发并注明晚了多久；更晚的丢弃并记一行日志",
        "a reminder missed while the service was down is sent late, with a note saying how late, up to "
        "this many seconds after it was due; later ones are dropped with a log line",
        ge=0,
    )
    mcp_config: Path | None = setting(
        None,
        "MCP 服务器配置文件（JSON，与桌面 MCP 客户端相同的 `mcpServers` 格式）；为空表示不用 MCP",
        "the MCP servers file (JSON, the `mcpServers` format desktop MCP clients use); unset: no MCP",
        fix="point it at a JSON file such as mcp.json (see docs/tools.md)",
    )

    model_supports_images: ImageSupport = setting(
        ImageSupport.AUTO,
        "模型能否看图片：`auto` 先试，端点拒绝图片时告诉对方并在本次运行中不再尝试；"
        "`true`；`false` 直接说明看不了",
        "whether the model is sent pictures: `auto` tries and, when the endpoint refuses image input, says "
        "so and stops trying until restart; `true`; `false` tells people it cannot see pictures",
        section="图片与文件 / Pictures and files",
    )
    vision_model: str | None = setting(
        None,
        "带图片的消息改用这个模型（同一端点、同一 Key；Azure 上是部署名称）；为空则用 `OPENAI_MODEL`",
        "the model for messages with pictures (same endpoint and key; on Azure a deployment name); "
        "unset: `OPENAI_MODEL`",
    )
    media_max_bytes: int = setting(
        20 * 1024 * 1024,
        "图片或文件最大字节数；更大的不下载完就拒绝",
        "the largest picture or file, in bytes; a larger one is refused without reading it all",
        ge=1024,
        le=1024 * 1024 * 1024,
    )
    media_timeout_seconds: float = setting(
        30.0,
        "下载一个图片或文件最多等待的秒数",
        "seconds one picture or file download may take",
        gt=0,
        le=600,
    )
    image_max_edge: int = setting(
        1600,
        "图片长边缩放到不超过这么多像素后再交给模型",
        "pictures are scaled down to at most this many pixels on the long side before the model sees them",
        ge=64,
        le=8192,
    )
    image_max_pixels: int = setting(
        36_000_000,
        "图片最多像素数（宽 × 高）；更大的在解码前拒绝（防解压炸弹）",
        "the most pixels (width × height) in a picture; larger ones are refused before decoding "
        "(decompression bombs)",
        ge=10_000,
        le=500_000_000,
    )
    file_max_chars: int = setting(
        20000,
        "文件转成文字后最多交给模型的字数（更长的截断并注明）",
        "the most characters of a file's text the model sees (longer ones are cut, with a note)",
        ge=500,
        le=1_000_000,
    )
    file_context_minutes: float = setting(
        30.0,
        "发过文件后，同一对话里接下来这么多分钟内的问题仍可以问这个文件；`0` 关闭",
        "for this many minutes after a file, later messages in the conversation can still ask about it; "
        "`0`: off",
        ge=0,
        le=24 * 60,
    )
    file_convert_seconds: float = setting(
        20.0,
        "把一个文件转成文字最多用的秒数（在独立进程里，超时即终止）",
        "seconds turning one file into text may take (in a child process, killed at the limit)",
        gt=0,
        le=600,
    )
    file_convert_memory_mb: int = setting(
        768,
        "转换文件的子进程最多使用的内存（MB）",
        "the most memory the file-converting child process may use, in MB (below 192 even small files fail)",
        ge=192,
        le=16384,
    )

    console_password: SecretStr | None = setting(
        None,
        "网页控制台（/console）的密码；不设置则控制台关闭（404）",
        "the web console's password (/console); unset: the console is off (404)",
        section="控制台 / Console",
    )
    console_allowed_ips: str = setting(
        "",
        "逗号分隔的 IP 或网段（如 10.0.0.0/8）；为空表示不限来源",
        "comma-separated IPs or networks (e.g. 10.0.0.0/8) allowed to reach the console; empty: any",
    )
    console_show_text: bool = setting(
        False,
        "控制台是否显示消息和记忆的内容；关：只显示元数据（轮数、时间、长度）",
        "whether the console shows what people wrote and what is remembered; off: metadata only",
    )
    console_session_hours: float = setting(
        8.0, "控制台登录的有效小时数", "hours a console login lasts", gt=0, le=720
    )

    @field_validator("openai_api_base", "dingtalk_oapi_base", "dingtalk_api_base", "qdrant_url", "chroma_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        parts = urlsplit(value.strip()) if value is not None else None
        if parts is not None and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError("not an http(s) URL")
        return value.strip() if value is not None else None

    @field_validator("database_url")
    @classmethod
    def _valid_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value().strip())
        if parts.scheme not in ("postgresql", "postgres") or not (parts.hostname or parts.query):
            raise ValueError("not a postgresql:// URL")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("bot_timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone") from exc
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("openai_model", "bot_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @property
    def mock_mode(self) -> bool:
        return self.force_mock_openai

    @property
    def provider(self) -> Provider:
        if self.mock_mode:
            return Provider.MOCK
        parts = urlsplit(self.openai_api_base)
        host = (parts.hostname or "").lower()
        if host.endswith(".openai.azure.com"):
            return Provider.AZURE_V1 if "/openai/v1" in parts.path.rstrip("/") + "/" else Provider.AZURE
        if host == "api.openai.com":
            return Provider.OPENAI
        if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.startswith("127."):  # noqa: S104
            return Provider.LOCAL
        return Provider.COMPATIBLE

    @property
    def callback_secret(self) -> SecretStr | None:
        """The secret that verifies inbound callbacks: SECRET, else DINGTALK_CLIENT_SECRET."""
        return self.secret or self.dingtalk_client_secret

    @property
    def allowed_user_ids(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.allowed_users.split(",") if part.strip())

    @property
    def allowed_group_ids(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.allowed_groups.split(",") if part.strip())

    @property
    def uses_stream(self) -> bool:
        return self.dingtalk_mode in (DingTalkMode.STREAM, DingTalkMode.BOTH)

    @property
    def app_credentials(self) -> bool:
        return bool(self.dingtalk_client_id and self.dingtalk_client_secret)

    @property
    def card_replies(self) -> bool:
        """Answers stream into an AI card: a template, app credentials, and the card style chosen."""
        return (
            self.dingtalk_reply_style is ReplyStyle.CARD
            and bool(self.dingtalk_card_template_id)
            and self.app_credentials
        )

    @property
    def embeddings(self) -> EmbeddingProvider:
        if self.mock_mode:  # mock mode never touches the network
            return EmbeddingProvider.LOCAL
        return self.embedding_provider

    @property
    def vector_server(self) -> str | None:
        """The vector server long-term memory lives on (CHROMA_URL or QDRANT_URL); None: embedded."""
        return self.chroma_url or self.qdrant_url

    @property
    def memory_folder(self) -> Path:
        """Embedded Qdrant and mem0's history DB: a folder beside DATABASE_PATH, never /tmp or ~."""
        path = self.database_path
        return path.parent / f"{path.stem}_store"

    @property
    def longest_answer_seconds(self) -> float:
        """How long one answer can take at most: every model attempt timing out, plus room for the send, plus
        each tool round (a tool call, then the model again)."""
        tool_rounds = self.agent_max_steps * (self.tool_timeout_seconds + self.openai_timeout)
        return self.openai_timeout * (self.openai_max_retries + 1) + 60 + tool_rounds

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.bot_timezone)
