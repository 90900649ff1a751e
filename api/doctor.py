"""The doctor's checks for one set of settings, in order, every secret masked: `dingbot doctor` prints
them (dingbot/doctor.py), the console runs them on demand. Blocking (HTTP probes, its own event loop for
the DingTalk checks): call it from a worker thread inside the service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from agent.diagnostics.checks import Check, mask, new_check, secret_values
from agent.diagnostics.memory import embedding_check, storage_checks, stored_dims_check
from agent.diagnostics.model import model_checks
from agent.diagnostics.tools import mcp_checks, reminder_check
from agent.errors import PromptError
from agent.model.errors import public_endpoint
from agent.prompts.library import PromptLibrary
from agent.settings.config import Settings
from api.dingtalk.diagnostics import dingtalk_checks


def run_checks(
    settings: Settings,
    *,
    timeout: float,
    send_test_message: bool = False,
    service_dims: Callable[[], int | None] | None = None,
) -> tuple[list[Check], dict[str, Any]]:
    """(checks in order, facts for the header), with every secret of `settings` masked."""
    import asyncio

    settings_check = new_check("settings.valid", "settings valid, prompts load", "配置有效，提示词可加载")
    try:
        PromptLibrary(settings.prompts_dir)
    except PromptError as exc:
        settings_check.failed(
            str(exc),
            f"提示词文件无法加载：{exc}",
            "fix the file named above, or point PROMPTS_DIR at the project's prompts/ folder",
            "修正上面提到的文件，或把 PROMPTS_DIR 指向项目的 prompts/ 文件夹",
        )
    else:
        settings_check.detail = f"prompts from {settings.prompts_dir}"
    header = {
        "provider": settings.provider.value,
        "model": "mock" if settings.mock_mode else settings.openai_model,
        "base": None if settings.mock_mode else public_endpoint(settings.openai_api_base),
        "embeddings": settings.embeddings.value,
        "database": str(settings.database_path.resolve()),
    }
    checks: list[Check] = [settings_check]
    model, findings = model_checks(settings, timeout=timeout)
    checks += model
    embeddings, dims = embedding_check(settings, findings, timeout=timeout)
    checks += [embeddings, stored_dims_check(settings, dims, service_dims=service_dims)]
    checks += storage_checks(settings)
    checks += asyncio.run(dingtalk_checks(settings, send_test_message=send_test_message))
    checks += [reminder_check(settings), *mcp_checks(settings)]
    secrets = secret_values(settings)
    for check in checks:
        redact_check(check, secrets)
    return checks, header


def redact(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 6:  # shorter ones would mask ordinary words; the checks never show them
            text = text.replace(secret, mask(secret))
    return text


def redact_check(check: Check, secrets: list[str]) -> None:
    for field in fields(check):
        value = getattr(check, field.name)
        if isinstance(value, str) and field.name != "status":
            setattr(check, field.name, redact(value, secrets))
