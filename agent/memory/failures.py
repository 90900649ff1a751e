"""Why long-term memory could not open, named by its real cause with the fix for that cause: the folder
held by another process (which one), the embeddings endpoint or vector server unreachable (DNS, refused,
TLS…), an endpoint without embeddings, a refused key. Never one generic hint for all of them."""

from __future__ import annotations

import os
from pathlib import Path

from agent.network import describe_failure
from agent.observe import Problem
from agent.settings.config import Settings

_HELD = "already accessed by another instance of qdrant client"
TITLE, TITLE_ZH = "long-term memory is off", "长期记忆不可用"


def lock_file(settings: Settings) -> Path:
    """Embedded Qdrant's lock: whoever holds it owns the memory folder."""
    return settings.memory_folder.resolve() / "qdrant" / ".lock"


def lock_holders(path: Path) -> list[tuple[int, str]]:
    """(pid, command line) of the processes that have `path` open, from /proc (Linux; [] elsewhere)."""
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
        command = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
        found.append((pid, command[:120] or "?"))
    return found


def _points_to(fd: str, target: Path) -> bool:
    try:
        return Path(os.readlink(fd)) == target
    except OSError:
        return False


def describe_holders(settings: Settings) -> tuple[str, str]:
    """Who holds the memory folder, in English and Chinese ("" when nobody can be named)."""
    holders = [(pid, cmd) for pid, cmd in lock_holders(lock_file(settings)) if pid != os.getpid()]
    if not holders:
        mine = any(pid == os.getpid() for pid, _ in lock_holders(lock_file(settings)))
        return ("this same process (opened twice)", "本进程自己（打开了两次）") if mine else ("", "")
    named = ", ".join(f"pid {pid} ({cmd})" for pid, cmd in holders)
    return named, named


def _held_problem(settings: Settings) -> Problem:
    folder = settings.memory_folder.resolve()
    who, who_zh = describe_holders(settings)
    return Problem(
        "memory",
        TITLE,
        TITLE_ZH,
        f"the memory folder {folder} is held by another process"
        + (f": {who}" if who else " (it could not be named)"),
        f"记忆文件夹 {folder} 正被另一个进程占用" + (f"：{who_zh}" if who_zh else "（无法确定是哪个进程）"),
        "stop that process, or give this one its own DATABASE_PATH (the memory folder sits beside it); "
        "several processes share memory only through a vector server (QDRANT_URL)",
        "停止那个进程，或给本进程另设 DATABASE_PATH（记忆文件夹在它旁边）；多个进程共享记忆只能通过向量服务器"
        "（QDRANT_URL）",
    )


def _status_of(exc: BaseException) -> int:
    chain: list[BaseException] = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 8:
        chain.append(chain[-1].__cause__)
    for item in chain:
        status = getattr(item, "status_code", None)
        if isinstance(status, int):
            return status
    return 0


def _is_transport(exc: BaseException) -> bool:
    import httpx
    import openai

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(
            seen, openai.APIConnectionError | httpx.TransportError | ConnectionError | TimeoutError
        ):
            return True
        if isinstance(seen, OSError) and seen.errno is not None:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def explain_open_failure(exc: BaseException, settings: Settings) -> Problem:
    """The cause and the fix of a memory store that did not open (dimension mismatches stop startup
    elsewhere, as ConfigError)."""
    if _HELD in str(exc).lower():
        return _held_problem(settings)
    from_vector_server = bool(settings.qdrant_url) and type(exc).__module__.startswith("qdrant_client")
    if _is_transport(exc):
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
