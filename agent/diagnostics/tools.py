"""`dingbot doctor`'s checks of the tools: each MCP server of MCP_CONFIG started and its tools listed, and
whether reminders can reach people after a conversation's reply window."""

from __future__ import annotations

import asyncio
import time

from agent.diagnostics.checks import Check, new_check
from agent.errors import ConfigError
from agent.settings.config import Settings


def reminder_check(settings: Settings) -> Check:
    check = new_check("tools.reminders", "reminders can be delivered", "提醒可以送达")
    if settings.agent_max_steps == 0:
        return check.skipped("AGENT_MAX_STEPS=0: tools are off", "AGENT_MAX_STEPS=0：工具已关闭")
    if settings.dingtalk_client_id and settings.dingtalk_client_secret is not None:
        check.detail = "session webhook, then the OpenAPI send (app credentials set)"
        return check
    check.detail = "session webhook only"
    return check.warned(
        "without app credentials a reminder can only use the conversation's session webhook, which expires "
        "about 90 minutes after the message: later reminders are refused when set",
        "没有应用凭据时提醒只能走会话的 sessionWebhook，它在消息后约 90 分钟过期：更晚的提醒在设置时会被拒绝",
        "set DINGTALK_CLIENT_ID and DINGTALK_CLIENT_SECRET (the app robot's AppKey/AppSecret)",
        "配置 DINGTALK_CLIENT_ID 和 DINGTALK_CLIENT_SECRET（应用机器人的 AppKey/AppSecret）",
    )


def mcp_checks(settings: Settings) -> list[Check]:
    """Start every enabled MCP server, list its tools, stop it: one check per server."""
    if settings.mcp_config is None:
        check = new_check("tools.mcp", "MCP servers", "MCP 服务器")
        return [check.skipped("MCP_CONFIG is not set: no MCP tools", "未设置 MCP_CONFIG：没有 MCP 工具")]
    from agent.tools.mcp import McpServers

    try:
        servers = McpServers.from_file(settings.mcp_config, settings.tool_timeout_seconds)
    except ConfigError as exc:
        check = new_check("tools.mcp", "MCP_CONFIG readable", "MCP_CONFIG 可读取")
        return [
            check.failed(
                str(exc), f"MCP 配置文件无效：{exc}", "fix the file named above", "修正上面提到的文件"
            )
        ]

    async def run() -> tuple[dict[str, dict[str, object]], float]:
        started = time.perf_counter()
        await servers.start()
        try:
            return servers.status(), (time.perf_counter() - started) * 1000
        finally:
            await servers.stop()

    status, elapsed = asyncio.run(run())
    checks = []
    for name, server in status.items():
        check = new_check(f"tools.mcp.{name}", f"MCP server {name}", f"MCP 服务器 {name}")
        check.elapsed_ms = elapsed
        tools = [str(t) for t in server["tools"]]  # type: ignore[attr-defined]
        if server["state"] == "ready":
            check.detail = f"{len(tools)} tool(s): {', '.join(tools) or 'none'}"
            if not server["in_groups"]:
                check.detail += " (one-to-one only)"
            if not tools:
                check.warned(
                    "the server offers no tool (or allowed_tools names none it has)",
                    "该服务器没有可用的工具（或 allowed_tools 里的名字它都没有）",
                    "check allowed_tools against the names above",
                    "对照上面的工具名检查 allowed_tools",
                )
            checks.append(check)
            continue
        detail = str(server.get("detail", ""))
        checks.append(
            check.failed(
                f"did not start: {detail}",
                f"无法启动：{detail}",
                "run its command by hand to see its own error; check command, args and env in MCP_CONFIG",
                "手动运行它的命令查看报错；检查 MCP_CONFIG 中的 command、args 和 env",
            )
        )
    return checks
