"""MCP servers the operator chose (`MCP_CONFIG`, the `mcpServers` JSON desktop MCP clients use), through
langchain-mcp-adapters: stdio and streamable-HTTP (and SSE) servers, each started with the service and
stopped with it, its tools filtered by `allowed_tools` and offered in groups only with `in_groups`.

Each server runs in a task of its own that holds its session open (the MCP SDK's streams must be opened and
closed in one task): a server that fails to start, or dies later, is one warning and its tools go away;
the rest of the service works on. Tool results are data from outside: the Toolbox caps their size and
marks them as such."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import io
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from langchain_core.tools import BaseTool

from agent.errors import ConfigError
from agent.messages import IncomingMessage

log = logging.getLogger(__name__)
START_SECONDS = 30.0  # a server not answering `initialize` and `tools/list` by then is failed
STOP_SECONDS = 5.0
RETRY_CAP_SECONDS = 3600.0
RESERVED = frozenset({"set_reminder", "list_reminders", "cancel_reminder"})  # built-in tools win
_TRANSPORTS = {"stdio": "stdio", "http": "streamable_http", "streamable-http": "streamable_http",
               "streamable_http": "streamable_http", "sse": "sse"}  # fmt: skip


class ServerState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ServerConfig:
    name: str
    connection: dict[str, Any]  # langchain-mcp-adapters' Connection
    allowed_tools: frozenset[str] | None  # None: every tool the server lists
    in_groups: bool
    timeout_seconds: float

    @property
    def where(self) -> str:
        """For logs and /healthz: the command or the URL's host, never headers or the environment."""
        if self.connection["transport"] == "stdio":
            return str(self.connection["command"])
        url = str(self.connection["url"]).split("?", 1)[0]
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rsplit('@', 1)[-1]}"  # never a user:password@


def _fail(path: Path, detail: str) -> ConfigError:
    return ConfigError(f"MCP_CONFIG={path}: {detail}")


def read_config(path: Path, default_timeout: float) -> list[ServerConfig]:
    """The enabled servers of an MCP_CONFIG file; ConfigError (one line) for a file that is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON ({exc})") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise _fail(path, 'expected {"mcpServers": {"<name>": {...}}}')
    found: list[ServerConfig] = []
    for name, spec in servers.items():
        if not isinstance(spec, dict):
            raise _fail(path, f"mcpServers.{name} must be an object")
        if spec.get("enabled", True) is False or spec.get("disabled") is True:
            continue
        found.append(_server(path, str(name), spec, default_timeout))
    return found


def _server(path: Path, name: str, spec: dict[str, Any], default_timeout: float) -> ServerConfig:
    kind = str(spec.get("transport") or spec.get("type") or ("stdio" if "command" in spec else "http"))
    transport = _TRANSPORTS.get(kind.lower())
    if transport is None:
        raise _fail(path, f"mcpServers.{name}: unknown transport {kind!r} (stdio, http, sse)")
    connection: dict[str, Any] = {"transport": transport}
    if transport == "stdio":
        command, args, env = spec.get("command"), spec.get("args", []), spec.get("env")
        if not isinstance(command, str) or not command:
            raise _fail(path, f"mcpServers.{name}: a stdio server needs a command")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise _fail(path, f"mcpServers.{name}: args must be a list of strings")
        if env is not None and not isinstance(env, dict):
            raise _fail(path, f"mcpServers.{name}: env must be an object")
        connection.update(command=command, args=args, env={str(k): str(v) for k, v in (env or {}).items()})
        if spec.get("cwd"):
            connection["cwd"] = str(spec["cwd"])
    else:
        url = spec.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _fail(path, f"mcpServers.{name}: an HTTP server needs an http(s) url")
        connection["url"] = url
        if isinstance(spec.get("headers"), dict):
            connection["headers"] = {str(k): str(v) for k, v in spec["headers"].items()}
    allowed = spec.get("allowed_tools")
    if allowed is not None and (
        not isinstance(allowed, list) or not all(isinstance(t, str) for t in allowed)
    ):
        raise _fail(path, f"mcpServers.{name}: allowed_tools must be a list of tool names")
    timeout = spec.get("timeout_seconds", default_timeout)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise _fail(path, f"mcpServers.{name}: timeout_seconds must be a positive number")
    return ServerConfig(
        name=name,
        connection=connection,
        allowed_tools=frozenset(allowed) if allowed is not None else None,
        in_groups=spec.get("in_groups", False) is True,
        timeout_seconds=float(timeout),
    )


@dataclass
class _Server:
    config: ServerConfig
    state: ServerState = ServerState.STARTING
    detail: str = ""
    tools: list[BaseTool] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    failures: int = 0  # in a row: the next start is tried after retry_base * 2**failures (capped)
    retry_at: float = 0.0  # time.monotonic()
    told: bool = False  # this run's failure was logged


class McpServers:
    """The running MCP servers and their tools (agent.tools.toolbox.McpTools)."""

    def __init__(self, configs: list[ServerConfig], *, retry_base_seconds: float = 60.0) -> None:
        self._servers = {c.name: _Server(c) for c in configs}
        self._retry_base = retry_base_seconds

    @classmethod
    def from_file(cls, path: Path, default_timeout: float, *, retry_base_seconds: float = 60.0) -> McpServers:
        return cls(read_config(path, default_timeout), retry_base_seconds=retry_base_seconds)

    async def start(self) -> None:
        """Start every server at once and wait until each is ready or failed (at most START_SECONDS)."""
        for server in self._servers.values():
            server.task = asyncio.create_task(self._run(server), name=f"mcp-{server.config.name}")
        waits = [asyncio.wait_for(s.ready.wait(), START_SECONDS) for s in self._servers.values()]
        results = await asyncio.gather(*waits, return_exceptions=True)
        for server, result in zip(self._servers.values(), results, strict=True):
            if isinstance(result, TimeoutError):  # stopped, failed, tried again later like any failure
                self._failed(server, f"no answer within {START_SECONDS:g} s")
                if server.task is not None:
                    server.task.cancel()
                    await asyncio.gather(server.task, return_exceptions=True)

    async def _run(self, server: _Server) -> None:
        from langchain_mcp_adapters.tools import load_mcp_tools

        name = server.config.name
        server.told = False
        try:
            async with _session(server.config.connection) as session:
                tools = await load_mcp_tools(session, server_name=name)
                allowed = server.config.allowed_tools
                server.tools = self._unique(
                    [t for t in tools if allowed is None or t.name in allowed], server
                )
                if server.stop.is_set():  # stopped (or given up on) while it started
                    return
                server.state, server.detail, server.failures = ServerState.READY, "", 0
                log.info(
                    "MCP server %s ready (%s): %d tool(s) offered: %s",
                    name,
                    server.config.where,
                    len(server.tools),
                    ", ".join(t.name for t in server.tools) or "none",
                )
                server.ready.set()
                await server.stop.wait()
            if server.state is ServerState.READY:
                server.state = ServerState.STOPPED
        except asyncio.CancelledError:
            if server.state is ServerState.READY:
                server.state = ServerState.STOPPED
            raise
        except BaseException as exc:  # an exception group from the SDK's task group, a dead process
            self._failed(server, _describe(exc))
        finally:
            server.tools = [] if server.state is not ServerState.READY else server.tools
            server.ready.set()

    def _failed(self, server: _Server, detail: str) -> None:
        if server.told:
            return  # this run's failure is known (a failed call, then the session closing)
        server.told = True
        started = server.state is ServerState.READY
        again = server.failures > 0  # a restart that failed as well: not warned about every time
        server.state, server.detail, server.tools = ServerState.FAILED, detail, []
        server.retry_at = time.monotonic() + min(self._retry_base * 2**server.failures, RETRY_CAP_SECONDS)
        server.failures += 1
        (log.info if again else log.warning)(
            "MCP server %s (%s) %s: %s; its tools are off, everything else works",
            server.config.name,
            server.config.where,
            "stopped" if started else "did not start" if not again else "still does not start",
            detail,
        )

    def _unique(self, tools: list[BaseTool], server: _Server) -> list[BaseTool]:
        """The server's tools whose names no built-in tool and no other ready server has (first wins)."""
        taken = set(RESERVED)
        for other in self._servers.values():
            if other is not server and other.state is ServerState.READY:
                taken.update(t.name for t in other.tools)
        kept = []
        for tool in tools:
            if tool.name in taken:
                log.warning(
                    "MCP server %s: tool %s skipped (the name is taken)", server.config.name, tool.name
                )
                continue
            taken.add(tool.name)
            kept.append(tool)
        return kept

    async def stop(self) -> None:
        for server in self._servers.values():
            server.stop.set()
        tasks = [s.task for s in self._servers.values() if s.task is not None]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=STOP_SECONDS)
        for task in late:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*late, return_exceptions=True)

    def tools_for(self, message: IncomingMessage) -> list[BaseTool]:
        tools: list[BaseTool] = []
        for server in self._servers.values():
            if server.state is ServerState.READY and (server.config.in_groups or not message.is_group):
                tools.extend(server.tools)
        return tools

    def call_failed(self, tool: str, error: BaseException) -> None:
        """A call of `tool` failed: when the cause is its server's connection gone (the process died, the
        HTTP session ended), the server is failed — its tools off until the periodic check revives it."""
        if not _connection_gone(error):
            return
        for server in self._servers.values():
            if server.state is ServerState.READY and any(t.name == tool for t in server.tools):
                self._failed(server, _describe(error))
                server.stop.set()

    async def revive(self) -> None:
        """Start again the servers that failed, each after a back-off that doubles while it keeps failing
        (the periodic check); waits for none of them. A server being restarted shows as failed until it
        is ready."""
        now = time.monotonic()
        for name, server in self._servers.items():
            if server.state is not ServerState.FAILED or now < server.retry_at:
                continue
            if server.task is not None and not server.task.done():
                continue
            log.info("MCP server %s: starting again", name)
            server.stop, server.ready = asyncio.Event(), asyncio.Event()
            server.task = asyncio.create_task(self._run(server), name=f"mcp-{name}")

    def timeout_for(self, tool: str) -> float | None:
        for server in self._servers.values():
            if any(t.name == tool for t in server.tools):
                return server.config.timeout_seconds
        return None

    def status(self) -> dict[str, dict[str, Any]]:
        """Per server: its state, the tools it offers, why it failed (for /healthz and the doctor)."""
        return {
            name: {
                "state": server.state.value,
                "tools": [t.name for t in server.tools],
                "in_groups": server.config.in_groups,
                **({"detail": server.detail} if server.detail else {}),
            }
            for name, server in self._servers.items()
        }


@contextlib.asynccontextmanager
async def _session(connection: dict[str, Any]) -> AsyncIterator[Any]:
    """An initialized MCP session. Stdio servers are started here rather than by the adapters, so that
    their stderr goes to a real file (ours, or the original when ours was replaced by something without
    a file descriptor): the SDK hands it to the child process as it is."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    if connection["transport"] != "stdio":
        from langchain_mcp_adapters.sessions import create_session

        async with create_session(connection) as session:  # type: ignore[arg-type]
            await session.initialize()
            yield session
        return
    params = StdioServerParameters(
        command=connection["command"],
        args=connection["args"],
        env=connection.get("env") or None,
        cwd=connection.get("cwd"),
    )
    async with stdio_client(params, errlog=_stderr()) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def _stderr() -> TextIO:
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            continue
    return open(os.devnull, "w")  # lives as long as the child


def _connection_gone(exc: BaseException) -> bool:
    import anyio
    from mcp.shared.exceptions import McpError

    if isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream):
        return True
    return isinstance(exc, McpError) and "connection closed" in str(exc).lower()


def _describe(exc: BaseException) -> str:
    """The innermost useful exception of an SDK failure, in one short line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
