"""The long-lived objects of a running service, built once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.assistant import Assistant
from agent.memory.service import MemoryService
from agent.settings.config import Settings
from agent.storage.database import Database
from agent.tools.mcp import McpServers
from api.delivery.courier import Courier
from api.delivery.dispatcher import Dispatcher
from api.delivery.housekeeping import PeriodicCheck
from api.delivery.recovery import ParkedMessages
from api.delivery.reminders import ReminderClock
from api.dingtalk.stream import StreamConnection
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
    reminders: ReminderClock | None = None
    mcp: McpServers | None = None  # MCP_CONFIG
    parked: ParkedMessages = field(default_factory=ParkedMessages)  # Stream messages while the database fails
