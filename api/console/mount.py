"""The console put on the app: its guard and every page's router (only when CONSOLE_PASSWORD is set)."""

from __future__ import annotations

from fastapi import FastAPI

from agent.settings.config import Settings
from agent.storage.health import StorageError
from api.console import deliveries, diagnostics, overview, people, prompts, reminders
from api.console.routes import SignIn, router, sign_in_first, storage_failed
from api.console.security import ConsoleGuard


def mount_console(app: FastAPI, settings: Settings) -> None:
    app.state.console_guard = ConsoleGuard(settings)
    for pages in (
        router,
        overview.router,
        people.router,
        prompts.router,
        deliveries.router,
        diagnostics.router,
        reminders.router,
    ):
        app.include_router(pages)
    app.add_exception_handler(SignIn, sign_in_first)
    app.add_exception_handler(StorageError, storage_failed)
