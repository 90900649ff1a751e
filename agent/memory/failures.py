"""Why long-term memory could not open, named by its real cause with the fix for that cause: the folder
held by another process (which one), the embeddings endpoint or vector server unreachable (DNS, refused,
TLS…), an endpoint without embeddings, a refused key. Never one generic hint for all of them."""

from __future__ import annotations

import errno
import os
import socket
import ssl
from pathlib import Path

from agent.network import describe_failure, exception_chain
from agent.observe import Problem
from agent.settings.choices import EmbeddingProvider
from agent.settings.config import Settings

_HELD = "already accessed by another instance of qdrant client"
_SOCKET_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ETIMEDOUT,
    }
)
_STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS})
TITLE, TITLE_ZH = "long-term memory is off", "长期记忆不可用"


def lock_file(settings: Settings) -> Path:
    """Embedded Qdrant's lock: whoever holds it owns the memory folder."""
    return settings.memory_folder.resolve() / "qdrant" / ".lock"


def lock_holders(path: Path) -> list[tuple[int, str]]:
    """(pid, program) of the processes that have `path` open, from /proc (Linux; [] elsewhere). The
    program is named without its arguments (they may hold anything): `python -m dingbot.server`."""
    found: list[tuple[int, str]] = []
    try:
        target = path.resolve()
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            fds = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or another user's
        with fds:
            if not any(_points_to(entry.path, target) for entry in fds):
                continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            raw = b""
        found.append((pid, _program([part.decode(errors="replace") for part in raw.split(b"\0") if part])))
    return found


def _program(args: list[str]) -> str:
    if not args:
        return "?"
    name = Path(args[0]).name
    if len(args) > 2 and args[1] == "-m":
        return f"{name} -m {args[2]}"
    if len(args) > 1 and (args[1].endswith(".py") or args[1].isidentifier()):
        return f"{name} {Path(args[1]).name}"  # a script, or a command such as `dingbot chat`
    return name


def _points_to(fd: str, target: Path) -> bool:
    try:
        return Path(os.readlink(fd)) == target
    except OSError:
        return False


def describe_holders(settings: Settings) -> str:
    """Who holds the memory folder ("" when nobody can be named)."""
    holders = lock_holders(lock_file(settings))
    others = [(pid, program) for pid, program in holders if pid != os.getpid()]
    if others:
        return ", ".join(f"pid {pid} ({program})" for pid, program in others)
    return "this same process (opened twice)" if holders else ""


def _held_problem(settings: Settings) -> Problem:
    folder = settings.memory_folder.resolve()
    who = describe_holders(settings)
    return Problem(
        "memory",
        TITLE,
        TITLE_ZH,
        f"the memory folder {folder} is held by another process"
        + (f": {who}" if who else " (it could not be named)"),
        f"记忆文件夹 {folder} 正被另一个进程占用" + (f"：{who}" if who else "（无法确定是哪个进程）"),
        "stop that process, or give this one its own DATABASE_PATH (the memory folder sits beside it); "
        "several processes share memory only through a vector server (QDRANT_URL)",
        "停止那个进程，或给本进程另设 DATABASE_PATH（记忆文件夹在它旁边）；多个进程共享记忆只能通过向量服务器"
        "（QDRANT_URL）",
    )


def _status_of(exc: BaseException) -> int:
    """The HTTP status an endpoint answered with, wherever it sits in the chain (0 when none)."""
    statuses = (getattr(item, "status_code", None) for item in exception_chain(exc))
    return next((status for status in statuses if isinstance(status, int)), 0)


def _is_transport(exc: BaseException) -> bool:
    """A failure on the way to a server: not a refused file, a full disk or a read-only folder."""
    import httpx
    import openai

    network = (
        openai.APIConnectionError,
        httpx.TransportError,
        socket.gaierror,
        ssl.SSLError,
        ConnectionError,
    )
    return any(
        isinstance(item, (*network, TimeoutError))
        or (isinstance(item, OSError) and item.errno in _SOCKET_ERRNOS)
        for item in exception_chain(exc)
    )


def _storage_problem(exc: BaseException, settings: Settings) -> Problem | None:
    """The memory folder cannot be written: permissions, a full disk, a read-only file system."""
    error = next(
        (e for e in exception_chain(exc) if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS), None
    )
    if error is None:
        return None
    folder = settings.memory_folder.resolve()
    where = f" ({error.filename})" if error.filename else ""
    reasons = {
        errno.ENOSPC: ("the disk is full", "磁盘已满", "free space on that disk", "清理该磁盘的空间"),
        errno.EDQUOT: (
            "the disk quota is used up",
            "磁盘配额已用完",
            "free space or raise the quota",
            "清理空间或提高配额",
        ),
        errno.EROFS: (
            "the file system is read-only",
            "文件系统是只读的",
            "mount it writable",
            "以可写方式挂载",
        ),
    }
    cause, cause_zh, fix, fix_zh = reasons.get(
        error.errno or 0,
        ("permission denied", "没有权限", "give this user write access to it", "给当前用户写权限"),
    )
    return Problem(
        "memory",
        TITLE,
        TITLE_ZH,
        f"the memory folder {folder} cannot be written: {cause}{where}",
        f"记忆文件夹 {folder} 无法写入：{cause_zh}{where}",
        f"{fix}, or point DATABASE_PATH at a writable place (the memory folder sits beside it)",
        f"{fix_zh}，或把 DATABASE_PATH 指向可写的位置（记忆文件夹在它旁边）",
    )


def explain_open_failure(exc: BaseException, settings: Settings) -> Problem:
    """The cause and the fix of a memory store that did not open (dimension mismatches stop startup
    elsewhere, as ConfigError)."""
    if _HELD in str(exc).lower():
        return _held_problem(settings)
    storage = _storage_problem(exc, settings)
    if storage is not None:
        return storage
    if settings.chroma_url and (
        type(exc).__module__.startswith(("chromadb", "httpx", "httpcore")) or "chroma" in str(exc).lower()
    ):
        return Problem(
            "memory",
            TITLE,
            TITLE_ZH,
            f"the vector server cannot be reached: Chroma at {settings.chroma_url} ({type(exc).__name__})",
            f"无法访问向量服务器：Chroma {settings.chroma_url}（{type(exc).__name__}）",
            "start the Chroma server (`chroma run --path <folder> --port <port>`) or correct CHROMA_URL; "
            "memory comes back by itself once it answers",
            "启动 Chroma 服务器（`chroma run --path <目录> --port <端口>`）或改正 CHROMA_URL；"
            "它能访问后记忆会自动恢复",
        )
    from_vector_server = bool(settings.qdrant_url) and type(exc).__module__.startswith("qdrant_client")
    remote_embeddings = settings.embeddings is not EmbeddingProvider.LOCAL
    if _is_transport(exc) and (from_vector_server or remote_embeddings):
        url, setting = (
            (str(settings.qdrant_url), "QDRANT_URL")
            if from_vector_server
            else (settings.openai_api_base, "OPENAI_API_BASE")
        )
        what, what_zh = (
            ("the vector server", "向量服务器")
            if from_vector_server
            else ("the embeddings endpoint", "嵌入端点")
        )
        failure = describe_failure(exc, url, setting)
        return Problem(
            "memory",
            TITLE,
            TITLE_ZH,
            f"{what} cannot be reached: {failure.detail}",
            f"无法访问{what_zh}：{failure.detail_zh}",
            failure.fix,
            failure.fix_zh,
        )
    status = _status_of(exc)
    model = settings.embedding_model
    if status == 404:
        return Problem(
            "memory",
            TITLE,
            TITLE_ZH,
            f"the endpoint has no embeddings model {model!r} (HTTP 404): many Ollama/vLLM setups serve none",
            f"端点没有嵌入模型 {model!r}（HTTP 404）：很多 Ollama/vLLM 部署不提供嵌入",
            "set EMBEDDING_PROVIDER=local (the bundled offline embedder), or EMBEDDING_MODEL to a model the "
            "endpoint serves",
            "设置 EMBEDDING_PROVIDER=local（内置离线嵌入），或把 EMBEDDING_MODEL 设为端点提供的嵌入模型",
        )
    if status in (401, 403):
        return Problem(
            "memory",
            TITLE,
            TITLE_ZH,
            f"the embeddings endpoint refused the key (HTTP {status})",
            f"嵌入端点拒绝了密钥（HTTP {status}）",
            "check OPENAI_API_KEY, or set EMBEDDING_PROVIDER=local",
            "检查 OPENAI_API_KEY，或设置 EMBEDDING_PROVIDER=local",
        )
    text = " ".join(str(exc).split())[:160]
    if settings.openai_api_key is not None:
        text = text.replace(settings.openai_api_key.get_secret_value(), "***")
    return Problem(
        "memory",
        TITLE,
        TITLE_ZH,
        f"the memory store failed to open: {type(exc).__name__}: {text}",
        f"记忆存储无法打开：{type(exc).__name__}: {text}",
        "run `dingbot doctor` for the embeddings and storage checks",
        "运行 `dingbot doctor` 检查嵌入和存储",
    )


def recall_problem(exc: BaseException, timeout: float) -> Problem:
    """A memory search that failed or took longer than MEMORY_TIMEOUT (replies go on without memories)."""
    timed_out = isinstance(exc, TimeoutError)
    return Problem(
        "memory",
        "memory search failing",
        "长期记忆检索失败",
        f"a memory search timed out after {timeout:g} s"
        if timed_out
        else f"a memory search failed ({type(exc).__name__})",
        f"一次记忆检索超过 {timeout:g} 秒未完成"
        if timed_out
        else f"一次记忆检索失败（{type(exc).__name__}）",
        "check the memory store (QDRANT_URL, or the folder beside DATABASE_PATH); if it is only slow, "
        "raise MEMORY_TIMEOUT",
        "检查记忆存储（QDRANT_URL，或 DATABASE_PATH 旁的文件夹）；若只是慢，调大 MEMORY_TIMEOUT",
    )
