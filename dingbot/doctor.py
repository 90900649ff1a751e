"""`dingbot doctor`: the user guide's troubleshooting list as one command.

Gathers the checks (agent/diagnostics/model.py, agent/diagnostics/memory.py, api/dingtalk/diagnostics.py),
renders them (✓ ok, ✗ problem, ! warning, - skipped; or `--json`) and sets the exit code: 0 when nothing
failed, 1 when a check failed, 2 when the settings themselves are invalid. No secret is ever printed:
the checks show at most a secret's last 4 characters, and a last pass masks any that slipped through.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.diagnostics.checks import Check

DEFAULT_MODEL_TIMEOUT = 20.0
SYMBOLS = {"ok": "✓", "fail": "✗", "warn": "!", "skip": "-"}
GROUPS = {
    "settings": "Settings · 配置",
    "model": "Model endpoint · 模型端点",
    "memory": "Long-term memory · 长期记忆",
    "storage": "Storage · 存储",
    "dingtalk": "DingTalk · 钉钉",
    "tools": "Tools · 工具",
}
QUIET_LOGGERS = ("httpx", "httpcore", "httpx2", "openai", "mem0")  # they log URLs (tokens) at INFO


def add_parser(sub: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check settings, the model endpoint, memory, storage and DingTalk; say the cause and the fix",
    )
    doctor.add_argument("--json", action="store_true", help="print the results as JSON (for machines)")
    doctor.add_argument(
        "--send-test-message",
        action="store_true",
        help="also post a test message via the custom-robot webhook (ACCESS_TOKEN): checks its signature",
    )
    doctor.add_argument(
        "--url",
        help="the running service's base URL, asked (GET /readyz) for the dimension of the memories it holds "
        "(default: http://127.0.0.1:$PORT)",
    )
    doctor.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_MODEL_TIMEOUT,
        help=f"seconds each model call may take (default {DEFAULT_MODEL_TIMEOUT:g}, at most OPENAI_TIMEOUT)",
    )
    doctor.set_defaults(handler=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError("give a number of seconds from 0 to 600, e.g. --timeout 20")
    return value


def run(args: argparse.Namespace) -> int:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
    try:
        checks, header, secrets = gather(args)
    except KeyboardInterrupt:
        return 130
    exit_code = _exit_code(checks)
    for check in checks:
        _redact_check(check, secrets)
    if args.json:
        body = {
            "ok": exit_code == 0,
            "exit_code": exit_code,
            **header,
            "checks": [{"group": c.name.split(".")[0], **c.to_dict()} for c in checks],
        }
        text = json.dumps(body, ensure_ascii=False, indent=2)
    else:
        text = render(checks, header, exit_code)
    print(_redact(text, secrets))
    return exit_code


def gather(args: argparse.Namespace) -> tuple[list[Check], dict[str, Any], list[str]]:
    """(checks in order, facts for the header, the secret values to mask)."""
    from agent.diagnostics.checks import new_check, secret_values
    from agent.errors import ConfigError
    from agent.settings.loading import load_settings
    from api.doctor import run_checks

    try:
        settings = load_settings(runnable=False)
    except ConfigError as exc:
        settings_check = new_check("settings.valid", "settings valid, prompts load", "配置有效，提示词可加载")
        settings_check.failed(
            str(exc),
            f"配置无效：{exc}",
            "correct the variable named above (see the settings table in README.md)",
            "按上面的提示修正该环境变量（参见 README.md 中的配置表）",
        )
        return [settings_check], {}, []
    url = args.url or _service_url(settings.host, settings.port)
    checks, header = run_checks(
        settings,
        timeout=args.timeout,
        send_test_message=args.send_test_message,
        service_dims=_ask_service(url),
    )
    return checks, header, secret_values(settings)


def _service_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104 - a bind address: ask it on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _ask_service(url: str) -> Callable[[], int | None]:
    """Asks the running service which dimension its memories have (GET /readyz)."""

    def ask() -> int | None:
        import httpx

        answer = httpx.get(f"{url.rstrip('/')}/readyz", timeout=3.0).json()
        dims = answer.get("embedding_dims") if isinstance(answer, dict) else None
        return dims if isinstance(dims, int) else None

    return ask


def _exit_code(checks: list[Check]) -> int:
    if len(checks) == 1 and checks[0].status.value == "fail":  # the settings do not load: nothing ran
        return 2
    return 1 if any(c.status.value == "fail" for c in checks) else 0


def _redact(text: str, secrets: list[str]) -> str:
    from api.doctor import redact

    return redact(text, secrets)


def _redact_check(check: Check, secrets: list[str]) -> None:
    from api.doctor import redact_check

    redact_check(check, secrets)


def render(checks: list[Check], header: dict[str, Any], exit_code: int) -> str:
    lines = ["DingHook doctor"]
    if header:
        facts = [f"provider {header['provider']}", f"model {header['model']}"]
        facts += [f"base {header['base']}"] if header["base"] else []
        facts += [f"embeddings {header['embeddings']}", f"database {header['database']}"]
        lines.append("  " + " · ".join(facts))
    group, last_skip = "", ""
    for check in checks:
        name = check.name.split(".")[0]
        if name != group:
            group, last_skip = name, ""
            lines += ["", GROUPS.get(name, name)]
        status = check.status.value
        title = f"  {SYMBOLS[status]} {check.title} · {check.title_zh}"
        if status == "skip" and check.cause == last_skip:
            lines.append(f"{title}: skipped, same reason · 跳过，原因同上")
            continue
        lines.append(f"{title}: {check.detail}" if check.detail else title)
        last_skip = check.cause if status == "skip" else ""
        if status == "skip":
            lines += [f"      skipped: {check.cause}", f"      跳过：{check.cause_zh}"]
            continue
        if check.cause:
            lines += [f"      cause: {check.cause}", f"      原因：{check.cause_zh}"]
        if check.fix:
            lines += [f"      fix:   {check.fix}", f"      修复：{check.fix_zh}"]
    counts = {s: sum(1 for c in checks if c.status.value == s) for s in SYMBOLS}
    lines.append("")
    if exit_code == 0:
        lines.append(
            f"OK: {counts['ok']} passed, {counts['warn']} warning(s), {counts['skip']} skipped · "
            f"通过 {counts['ok']} 项，警告 {counts['warn']} 项，跳过 {counts['skip']} 项"
        )
    else:
        lines.append(
            f"PROBLEMS: {counts['fail']} failed, {counts['warn']} warning(s), {counts['skip']} skipped "
            f"(exit {exit_code}) · 发现问题：{counts['fail']} 项失败，警告 {counts['warn']} 项，"
            f"跳过 {counts['skip']} 项"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    from dingbot.cli import main

    sys.exit(main(["doctor", *sys.argv[1:]]))
