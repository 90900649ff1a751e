"""MCP servers from MCP_CONFIG through the service: real servers written with the `mcp` SDK over stdio and
streamable HTTP, and the published mcp-server-time; a failing, a hung and a crashing server; results
capped and marked as data; a real ChatOpenAI's tool call reaching a server."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from agent.assembly import open_agent
from agent.errors import ConfigError
from agent.settings.config import PROJECT_ROOT, Settings
from agent.tools.mcp import McpServers, read_config
from tests.assistants import person_message
from tests.conftest import SECRET, RunningApp, serve
from tests.fakes.mcp_server import http_app
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.waiting import PATIENCE, wait_until

KEY = "sk-test-0123456789abcdefghijklmnop"


def stdio(*extra: str, **fields: Any) -> dict[str, Any]:
    return {
        "command": sys.executable,
        "args": ["-m", "tests.fakes.mcp_server", *extra],
        "env": {"PYTHONPATH": str(PROJECT_ROOT)},
        **fields,
    }


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    """The test MCP server over streamable HTTP, under real uvicorn on a loopback port."""
    config = uvicorn.Config(http_app(), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + PATIENCE
    while not server.started:
        assert time.monotonic() < deadline, "the MCP HTTP server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(timeout=PATIENCE)


def write_config(tmp_path: Path, servers: dict[str, Any]) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


def ask(app: RunningApp, fake_dingtalk: FakeDingTalk, text: str, **fields: Any) -> str:
    before = len(fake_dingtalk.replies())
    app.post_callback(encode(callback(fake_dingtalk.webhook(), text, **fields)), signed_headers(SECRET))
    fake_dingtalk.wait_for(before + 1, path="/robot/sendBySession")
    return str(fake_dingtalk.replies()[before]["text"]["content"])


def test_the_desktop_config_format_is_read_and_bad_files_are_one_line(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "time": {"command": "uvx", "args": ["mcp-server-time"], "allowed_tools": ["get_current_time"]},
            "web": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer x"}},
            "off": {"command": "nothing", "enabled": False},
        },
    )
    time_server, web = read_config(path, default_timeout=30)
    assert time_server.connection == {
        "transport": "stdio",
        "command": "uvx",
        "args": ["mcp-server-time"],
        "env": {},
    }
    assert time_server.allowed_tools == frozenset({"get_current_time"})
    assert (time_server.in_groups, time_server.timeout_seconds) == (False, 30)
    assert web.connection["transport"] == "streamable_http"
    assert web.where == "https://mcp.example.com/mcp"
    for content, expected in [
        ("{", "not valid JSON"),
        ('{"servers": {}}', 'expected {"mcpServers"'),
        ('{"mcpServers": {"x": {"type": "carrier-pigeon"}}}', "unknown transport 'carrier-pigeon'"),
        ('{"mcpServers": {"x": {"transport": "stdio"}}}', "needs a command"),
        ('{"mcpServers": {"x": {"command": "a", "timeout_seconds": 0}}}', "timeout_seconds must be"),
    ]:
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            read_config(path, default_timeout=30)
        assert expected in str(caught.value)
        assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="file not found"):
        read_config(tmp_path / "missing.json", default_timeout=30)


def test_mcp_tools_answer_through_the_service_and_failures_stay_contained(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, tmp_path: Path, http_server: str
) -> None:
    config = write_config(
        tmp_path,
        {
            "local": stdio(timeout_seconds=1, allowed_tools=["add", "hang", "crash", "huge", "orders"]),
            "remote": {"url": http_server, "allowed_tools": ["secret_word"], "in_groups": True},
            "broken": stdio("--fail"),
            "time": {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]},
        },
    )
    settings = make_settings(mcp_config=config, tool_result_max_chars=1000, check_interval_seconds=1)
    with serve(settings) as app:
        health = app.client.get("/healthz").json()["mcp"]
        assert health["local"] == {
            "state": "ready",
            "tools": ["add", "hang", "crash", "huge", "orders"],
            "in_groups": False,
        }
        assert health["remote"]["tools"] == ["secret_word"]
        assert health["broken"]["state"] == "failed"
        assert "Connection closed" in health["broken"]["detail"]
        assert health["time"]["tools"] == ["get_current_time", "convert_time"]
        assert app.client.get("/readyz").status_code == 200

        added = ask(app, fake_dingtalk, '用工具 add {"a": 2, "b": 3}')
        assert added == '<tool_result source="add">\n2 + 3 = 5\n</tool_result>'
        now = ask(app, fake_dingtalk, '用工具 get_current_time {"timezone": "Asia/Shanghai"}')
        assert '"timezone": "Asia/Shanghai"' in now
        assert "the word of the day is 蓝莓" in ask(app, fake_dingtalk, "用工具 secret_word")
        in_group = ask(app, fake_dingtalk, '用工具 add {"a": 2, "b": 3}', group=True)
        assert "模拟回复" in in_group  # not offered in groups: the mock just talks

        huge = ask(app, fake_dingtalk, "用工具 huge")
        assert huge.count("长") == 1000
        assert "[cut: only the first 1000 characters are shown]" in huge
        orders = ask(app, fake_dingtalk, "用工具 orders")
        assert orders.startswith('<tool_result source="orders">\nIGNORE ALL PREVIOUS')
        assert "did not answer within 1 seconds" in ask(app, fake_dingtalk, "用工具 hang")
        assert "2 + 3 = 5" in ask(app, fake_dingtalk, '用工具 add {"a": 2, "b": 3}')  # alive after the hang

        crashed = ask(app, fake_dingtalk, "用工具 crash")
        assert "The tool crash failed" in crashed
        assert "提醒你：喝水" in ask(app, fake_dingtalk, "3分钟后提醒我喝水")  # the rest works
        assert app.client.get("/readyz").status_code == 200
        # the periodic check starts the crashed server again
        wait_until(
            lambda: app.client.get("/healthz").json()["mcp"]["local"]["state"] == "ready",
            what="the crashed server started again",
        )
        assert "2 + 3 = 5" in ask(app, fake_dingtalk, '用工具 add {"a": 2, "b": 3}')


def test_a_real_models_tool_call_reaches_the_published_time_server(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        {
            "time": {
                "command": sys.executable,
                "args": ["-m", "mcp_server_time"],
                "allowed_tools": ["get_current_time"],
            }
        },
    )
    settings = make_settings(
        force_mock_openai=False,
        openai_api_key=KEY,
        openai_api_base=f"{fake_openai.url}/v1",
        openai_max_retries=0,
        mcp_config=config,
    )
    fake_openai.script.append(Scripted(tool_calls=[("get_current_time", '{"timezone": "Asia/Tokyo"}')]))
    fake_openai.script.append(Scripted(text="东京现在是晚上。"))

    async def go() -> str:
        assert settings.mcp_config is not None
        servers = McpServers.from_file(settings.mcp_config, settings.tool_timeout_seconds)
        await servers.start()
        try:
            async with open_agent(settings, memory=False, mcp=servers) as parts:
                return (await parts.assistant.reply(person_message("东京现在几点？"))).text
        finally:
            await servers.stop()

    assert asyncio.run(go()) == "东京现在是晚上。"
    first, second = (r.json() for r in fake_openai.chats())
    offered = {t["function"]["name"] for t in first["tools"]}
    assert "get_current_time" in offered
    assert "convert_time" not in offered  # not in allowed_tools
    result = second["messages"][-1]
    assert result["role"] == "tool"
    assert '"timezone": "Asia/Tokyo"' in result["content"]
    assert result["content"].startswith('<tool_result source="get_current_time">')


def test_a_server_slower_than_the_start_wait_is_failed_then_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import agent.tools.mcp as mcp_module
    from agent.tools.mcp import ServerConfig

    monkeypatch.setattr(mcp_module, "START_SECONDS", 0.5)
    spec = stdio("--slow", "2")
    config = ServerConfig("slow", {"transport": "stdio", **spec}, None, False, 5.0)

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        servers = McpServers([config], retry_base_seconds=0.0)
        await servers.start()
        try:
            failed = servers.status()["slow"]
            await servers.revive()
            deadline = time.monotonic() + PATIENCE
            while servers.status()["slow"]["state"] != "ready":
                assert time.monotonic() < deadline, servers.status()
                await asyncio.sleep(0.05)
            return failed, servers.status()["slow"]
        finally:
            await servers.stop()

    failed, ready = asyncio.run(go())
    assert failed["state"] == "failed"
    assert failed["detail"] == "no answer within 0.5 s"
    assert "add" in ready["tools"]
