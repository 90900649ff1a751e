"""The long-lived objects of a running service, built once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from agent.assistant import Assistant
from agent.config import Settings
from agent.database import Database
from agent.memory import MemoryService
from api.courier import Courier
from api.delivery import Dispatcher
from api.dingtalk.stream import StreamConnection
from api.housekeeping import PeriodicCheck
from api.metrics import Metrics


@dataclass(slots=True)
class Services:
    settings: Settings
    database: Database
    assistant: Assistant
    dispatcher: Dispatcher
    memory: MemoryService
    check: PeriodicCheck
    metrics: Metrics
    courier: Courier
    stream: StreamConnection | None = None  # DINGTALK_MODE=stream|both
