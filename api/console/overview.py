"""The console's overview: mode, model and provider, each part's readiness, messages per hour over the
last 24 hours and reply latency percentiles (SVG drawn here), errors by class, unsent replies."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from agent.model.health import ModelState
from api.console.charts import bar_chart, line_chart
from api.console.routes import ConsoleRoute, GuardDep, SessionDep, page
from api.deps import ServicesDep
from api.dingtalk.sender import errcode_meaning

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
HOURS = 24
LATENCY_SAMPLE = 2000  # replies the percentiles are read from at most, spread over the day (bounded work)
_ERRCODE = re.compile(r"errcode (-?\d+)")


@dataclass
class Day:
    """The last 24 hours, hour by hour (oldest first)."""

    starts: list[float]
    received: list[int]
    latencies: list[list[float]] = field(default_factory=list)
    unsent: int = 0
    failed_messages: int = 0
    failed_sends: Counter[str] = field(default_factory=Counter)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _read_day(conn: Any, now: float) -> Day:
    first = (now // 3600 - (HOURS - 1)) * 3600  # the start of the hour 23 hours ago
    starts = [first + 3600 * i for i in range(HOURS)]
    day = Day(starts=starts, received=[0] * HOURS)
    for (received_at,) in conn.execute("SELECT received_at FROM inbox WHERE received_at >= ?", (first,)):
        hour = int((float(received_at) - first) // 3600)  # bucketed here: the same SQL on both engines
        if 0 <= hour < HOURS:
            day.received[hour] += 1
    day.latencies = [[] for _ in starts]
    replies = int(conn.execute("SELECT COUNT(*) FROM outbox WHERE updated_at >= ?", (first,)).fetchone()[0])
    every = max(1, -(-replies // LATENCY_SAMPLE))  # a sample spread over the whole day, not its last hours
    for received_at, seconds, state in conn.execute(
        # the state is checked here, not in SQL: with it there the planner walks every sent row by state
        "SELECT i.received_at, o.updated_at - i.received_at, o.state FROM outbox AS o JOIN inbox AS i "
        "ON i.msg_id = o.msg_id WHERE o.updated_at >= ? AND o.part = 0 AND o.channel = 'reply' "
        "AND o.id % ? = 0",
        (first, every),
    ).fetchall():
        if state != "sent":
            continue
        hour = int((float(received_at) - first) // 3600)
        if 0 <= hour < HOURS:
            day.latencies[hour].append(max(0.0, float(seconds)))
    day.unsent = int(conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0])
    day.failed_messages = int(
        conn.execute(
            "SELECT COUNT(*) FROM inbox WHERE state = 'failed' AND updated_at >= ?", (first,)
        ).fetchone()[0]
    )
    for (error,) in conn.execute(
        "SELECT last_error FROM outbox WHERE state = 'failed' AND updated_at >= ? LIMIT 1000", (first,)
    ).fetchall():
        code = _ERRCODE.search(error or "")
        day.failed_sends[
            f"errcode {code.group(1)}: {errcode_meaning(int(code.group(1)))}" if code else "other"
        ] += 1
    return day


def _counter_samples(counter: Any) -> dict[str, float]:
    """A labelled counter's totals since this process started, by label value."""
    found: dict[str, float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                found[",".join(sample.labels.values())] = sample.value
    return found


@router.get("")
async def overview(request: Request, guard: GuardDep, session: SessionDep, services: ServicesDep) -> Response:
    settings = services.settings
    database_ok = await services.database.ping()
    now = time.time()
    day = await services.database.run(lambda conn: _read_day(conn, now)) if database_ok else None
    model = services.assistant.health.status
    parts = [
        ("数据库 · Database", database_ok, "ok" if database_ok else "unavailable"),
        ("模型 · Model", model.state is not ModelState.FAILING, model.state.value),
        ("长期记忆 · Memory", services.memory.available, "ok" if services.memory.available else "off"),
    ]
    if services.stream is not None:
        stream = services.stream.status
        parts.append(("Stream", stream.ready, stream.state.value))
    if services.mcp is not None:
        for name, server in services.mcp.status().items():
            parts.append((f"MCP · {name}", server["state"] == "ready", str(server["state"])))
    charts = {}
    errors: list[tuple[str, str, float]] = []
    if day is not None:
        zone = settings.timezone  # BOT_TIMEZONE: the team's hours, not the server's
        labels = [datetime.fromtimestamp(start, zone).strftime("%H:%M") for start in day.starts]
        charts["received"] = bar_chart(day.received, labels, title="messages per hour")
        charts["latency"] = line_chart(
            {
                "p50": [_percentile(values, 50) for values in day.latencies],
                "p95": [_percentile(values, 95) for values in day.latencies],
                "p99": [_percentile(values, 99) for values in day.latencies],
            },
            labels,
            title="reply latency per hour, seconds",
            unit="s",
        )
        errors += [("投递失败 · Send given up (24 h)", name, n) for name, n in day.failed_sends.most_common()]
        if day.failed_messages:
            errors.append(("消息处理失败 · Messages given up (24 h)", "", day.failed_messages))
    metrics = services.metrics
    errors += [
        ("模型调用失败 · Model errors", kind, n) for kind, n in _counter_samples(metrics.model_errors).items()
    ]
    errors += [("需要处理的问题 · Problems", key, n) for key, n in _counter_samples(metrics.problems).items()]
    return page(
        request,
        "overview.html",
        guard,
        session,
        mode="mock" if settings.mock_mode else "real",
        provider=settings.provider.value,
        model="mock" if settings.mock_mode else settings.openai_model,
        parts=parts,
        received=sum(day.received) if day else 0,
        unsent=day.unsent if day else 0,
        replies=sum(len(values) for values in day.latencies) if day else 0,
        charts=charts,
        errors=errors,
    )
