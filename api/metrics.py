"""Prometheus metrics for GET /metrics, in a registry of the app's own (several apps can share a process)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from api.dingtalk.sender import SendResult

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, longest_answer_seconds: float = 60.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # up to the answer watchdog: a model that takes 3 minutes shows as such, not as "over 60 s"
        model_buckets = sorted({*_LATENCY_BUCKETS, 120.0, 300.0, float(math.ceil(longest_answer_seconds))})
        self.callbacks = Counter(
            "dingbot_callbacks",
            "Callbacks by outcome: accepted, duplicate, ignored, stale, refused_4xx, unavailable_503",
            ["outcome"],
            registry=r,
        )
        self.in_flight = Gauge("dingbot_messages_in_flight", "Accepted messages not answered yet", registry=r)
        self.model_seconds = Histogram(
            "dingbot_model_seconds", "Model call latency", buckets=model_buckets, registry=r
        )
        self.model_errors = Counter(
            "dingbot_model_errors", "Failed model calls by class", ["kind"], registry=r
        )
        self.truncated = Counter(
            "dingbot_answers_truncated",
            "Answers the model stopped at MAX_TOKENS (sent with a note)",
            registry=r,
        )
        self.extraction_failures = Counter(
            "dingbot_memory_extraction_failures",
            "Memory extractions that gave nothing usable, by reason (not_json: no JSON even after a repair)",
            ["reason"],
            registry=r,
        )
        self.sends = Counter(
            "dingbot_sends",
            "Send attempts by route (session_webhook, openapi, robot_webhook) and DingTalk errcode "
            "(or http_<status>, transport)",
            ["via", "errcode"],
            registry=r,
        )
        self.tool_calls = Counter(
            "dingbot_tool_calls",
            "Tool calls the model made, by tool and outcome (ok, error, timeout, unknown, refused)",
            ["tool", "outcome"],
            registry=r,
        )
        self.tool_seconds = Histogram(
            "dingbot_tool_seconds",
            "Tool call latency, by tool",
            ["tool"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.media = Counter(
            "dingbot_media",
            "Pictures and files read for the model, by kind (png, jpeg, pdf, docx, ...; picture or file when "
            "not fetched) and outcome (ok, too_large, expired, unreachable, unsupported, broken, "
            "too_many_pixels, encrypted, empty, too_hard, no_credentials)",
            ["kind", "outcome"],
            registry=r,
        )
        self.media_seconds = Histogram(
            "dingbot_media_seconds",
            "Fetching and reading one picture or file (download, checks, scaling or conversion), by kind",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "dingbot_llm_tokens",
            "Tokens of model calls (answers, tool rounds, fact extraction, summaries), by model and kind "
            "(prompt, completion): the endpoint's own usage counts, cl100k_base's where it sends none",
            ["model", "kind"],
            registry=r,
        )
        self.reminders = Counter(
            "dingbot_reminders_fired",
            "Reminders fired: sent (stored to send), dropped (missed by more than REMINDER_GRACE_SECONDS)",
            ["outcome"],
            registry=r,
        )
        self.reminder_delay = Histogram(
            "dingbot_reminder_delay_seconds",
            "How long after its due time a reminder's message was stored to send",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 21600),
            registry=r,
        )
        self.outbox_pending = Gauge(
            "dingbot_outbox_pending",
            "Stored replies and notices not sent yet (at the last check)",
            registry=r,
        )
        self.memory_seconds = Histogram(
            "dingbot_memory_recall_seconds",
            "Long-term memory recall latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        self.problems = Counter(
            "dingbot_problems",
            "Reports of problems operators must fix, by kind: model (endpoint failing), memory, delivery",
            ["key"],
            registry=r,
        )
        self.database_ok = Gauge(
            "dingbot_database_ok",
            "1 while the database works, 0 while it is damaged, full, unwritable or failing",
            registry=r,
        )
        self.model_ok = Gauge(
            "dingbot_model_ok",
            "1 while the model endpoint is ok (or mock), 0 while it is failing or not checked yet",
            registry=r,
        )

        # Stream mode (api/dingtalk/stream.py); no series at all in HTTP mode.
        self.stream_state_gauge = Gauge(
            "dingbot_stream_state",
            "Stream connection state: 1 for the current one (connected, connecting, failing, stopped)",
            ["state"],
            registry=r,
        )
        self.stream_reconnects = Counter(
            "dingbot_stream_reconnects",
            "Stream connections that ended, by reason: disconnect, closed, dropped, idle, error",
            ["reason"],
            registry=r,
        )
        self.stream_failures = Counter(
            "dingbot_stream_connect_failures",
            "Failed attempts to open a Stream connection: credentials, gateway, network, websocket, error",
            ["kind"],
            registry=r,
        )
        self.stream_frames = Counter(
            "dingbot_stream_frames",
            "Frames received from the Stream gateway, by type: callback, system, event, other, invalid",
            ["type"],
            registry=r,
        )

    def track_in_flight(self, count: Callable[[], float]) -> None:
        self.in_flight.set_function(count)

    def callback(self, outcome: str) -> None:
        self.callbacks.labels(outcome).inc()

    def track_database(self, ok: Callable[[], float]) -> None:
        self.database_ok.set_function(ok)

    def track_model(self, ok: Callable[[], float]) -> None:
        self.model_ok.set_function(ok)

    def problem(self, key: str) -> None:
        self.problems.labels(key).inc()

    def track_outbox(self, count: Callable[[], float]) -> None:
        self.outbox_pending.set_function(count)

    def sent(self, result: SendResult, via: str) -> None:
        if result.errcode is not None:
            label = str(result.errcode)
        else:
            label = f"http_{result.status}" if result.status else "transport"
        self.sends.labels(via, label).inc()

    def stream_state(self, state: str, states: Iterable[str]) -> None:
        for name in states:
            self.stream_state_gauge.labels(name).set(1 if name == state else 0)

    def stream_reconnect(self, reason: str) -> None:
        self.stream_reconnects.labels(reason).inc()

    def stream_failure(self, kind: str) -> None:
        self.stream_failures.labels(kind).inc()

    def stream_frame(self, frame_type: str) -> None:
        self.stream_frames.labels(frame_type).inc()

    # what the agent reports (through api/alerts.py's ServiceObserver)
    def model_call(self, seconds: float, error_kind: str | None) -> None:
        self.model_seconds.observe(seconds)
        if error_kind:
            self.model_errors.labels(error_kind).inc()

    def memory_recall(self, seconds: float) -> None:
        self.memory_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
