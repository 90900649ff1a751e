"""The model endpoint's state: checked at startup with the doctor's checks, shown by /readyz and /healthz,
checked again while failing, updated by every answer."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from agent.settings.config import Settings
from tests.conftest import SECRET, RunningApp, serve
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when the block ends: nothing listens


def endpoint_state(app: RunningApp, *, until: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> Any:
    """/readyz's model_endpoint once `until` holds (the check runs in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        endpoint = app.client.get("/readyz").json()["model_endpoint"]
        if until(endpoint):
            return endpoint
        assert time.monotonic() < deadline, f"model endpoint still {endpoint}"
        time.sleep(0.05)


def checked(endpoint: dict[str, Any]) -> bool:
    return endpoint["state"] not in ("unchecked", "checking")


def real(make_settings: Callable[..., Settings], base: str, **overrides: Any) -> Settings:
    return make_settings(force_mock_openai=False, openai_api_key="sk-test", openai_api_base=base, **overrides)


def test_a_wrong_base_is_reported_at_startup_with_its_cause_and_fix(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    with caplog.at_level(logging.INFO), serve(real(make_settings, f"http://127.0.0.1:{port}/v1")) as app:
        endpoint = endpoint_state(app, until=checked)
        health = app.client.get("/healthz").json()["model_endpoint"]
        ready = app.client.get("/readyz")
    assert endpoint["state"] == "failing"
    assert endpoint["source"] == "startup check"
    assert endpoint["cause"] == (
        f"connection: could not connect to http://127.0.0.1:{port}/v1: connection refused by "
        f"127.0.0.1:{port}: nothing listens there"
    )
    assert endpoint["fix"].startswith(f"start the server at 127.0.0.1:{port}, or correct the port")
    assert endpoint["cause_zh"].startswith("连接失败：")
    assert health == endpoint
    assert ready.status_code == 200  # shown, not unready: people still get a clear notice in chat
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.model.health"]
    assert lines == [f"model endpoint FAILING (startup check): {endpoint['cause']}. Fix: {endpoint['fix']}"]


def test_a_model_the_endpoint_does_not_list_is_named_with_the_ones_it_has(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> None:
    fake_openai.models = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
    settings = real(make_settings, f"{fake_openai.url}/v1", openai_model="gpt-4o-mni")
    with serve(settings) as app:
        endpoint = endpoint_state(app, until=checked)
    assert endpoint["state"] == "failing"
    assert endpoint["cause"].startswith(f"model 'gpt-4o-mni' does not exist at {fake_openai.url}/v1")
    assert endpoint["fix"].startswith("set OPENAI_MODEL to a listed model, e.g. gpt-4o-mini")
    assert fake_openai.chats() == []  # a check lists models: it spends no tokens


def test_a_failing_endpoint_is_checked_again_and_its_recovery_is_noticed_without_a_message(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.models = ("llama3",)  # the model is not pulled yet
    settings = real(
        make_settings, f"{fake_openai.url}/v1", openai_model="qwen2.5", check_interval_seconds=0.2
    )
    with caplog.at_level(logging.INFO), serve(settings) as app:
        assert endpoint_state(app, until=checked)["state"] == "failing"
        fake_openai.models = ("llama3", "qwen2.5")  # `ollama pull qwen2.5`
        endpoint = endpoint_state(app, until=lambda e: e["state"] == "ok")
        metrics = app.client.get("/metrics").text
    assert endpoint["source"] == "periodic check"
    assert "dingbot_model_ok 1.0" in metrics.splitlines()
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.model.health"]
    assert lines[0].startswith("model endpoint FAILING (startup check): model 'qwen2.5' does not exist")
    assert lines[-1].startswith("model endpoint ok again (periodic check)")
    assert len(lines) == 2  # one line per change, however many checks ran between


def test_a_placeholder_key_is_reported_before_any_request(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        force_mock_openai=False,
        openai_api_key="sk-xxx",  # copied from the guide's example
        openai_api_base="https://llm.example.com/v1",  # never asked: the network guard would fail the test
        embedding_provider="local",
    )
    with serve(settings) as app:
        endpoint = endpoint_state(app, until=checked)
    assert endpoint["state"] == "failing"
    assert endpoint["cause"].startswith("OPENAI_API_KEY is a placeholder from an example")


def test_answers_override_a_check_that_passes(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    """The endpoint lists the model but refuses to answer with it: only an answer that works clears that."""
    fake_openai.script.extend([Scripted(status=403), Scripted(text="好的")])
    settings = real(make_settings, f"{fake_openai.url}/v1", openai_max_retries=0, check_interval_seconds=0.1)
    with serve(settings) as app:
        assert endpoint_state(app, until=checked)["state"] == "ok"
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "第一句")), signed_headers(SECRET))
        fake_dingtalk.wait_for(1, timeout=30)
        failing = endpoint_state(app, until=lambda e: e["state"] == "failing")
        listed = len(fake_openai.wait_for(1, path="/models"))
        fake_openai.wait_for(listed + 2, timeout=30, path="/models")  # two periodic checks passed since
        assert app.client.get("/readyz").json()["model_endpoint"]["state"] == "failing"
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "第二句")), signed_headers(SECRET))
        fake_dingtalk.wait_for(2, timeout=30)
        endpoint = endpoint_state(app, until=lambda e: e["state"] == "ok")
    assert failing["source"] == "answer"
    assert failing["kind"] == "permission"
    assert endpoint["source"] == "answer"
    assert "已通知管理员" not in fake_dingtalk.replies()[0]["text"]["content"]  # no alerts set up


def test_mock_mode_has_nothing_to_check(make_settings: Callable[..., Settings]) -> None:
    with serve(make_settings()) as app:
        assert app.client.get("/readyz").json()["model_endpoint"]["state"] == "mock"
        assert "dingbot_model_ok 1.0" in app.client.get("/metrics").text.splitlines()


def test_causes_are_shown_to_this_machine_only_and_a_failing_endpoint_is_degraded(
    make_settings: Callable[..., Settings],
) -> None:
    """Hosts and fixes describe the set-up: /healthz and /readyz give them to curl on the host, and
    only states to a request that came through a proxy (from anywhere)."""
    port = closed_port()
    with serve(real(make_settings, f"http://127.0.0.1:{port}/v1")) as app:
        endpoint_state(app, until=checked)
        local = app.client.get("/healthz").json()
        remote = app.client.get("/healthz", headers={"X-Forwarded-For": "203.0.113.7"}).json()
        remote_ready = app.client.get("/readyz", headers={"X-Forwarded-For": "203.0.113.7"}).json()
    assert local["status"] == remote["status"] == "degraded"
    assert "cause" in local["model_endpoint"]
    assert "fix" in local["model_endpoint"]
    for body in (remote, remote_ready):
        assert body["model_endpoint"]["state"] == "failing"
        assert not {"cause", "fix", "cause_zh", "fix_zh", "detail"} & set(body["model_endpoint"])
    assert str(port) not in str(remote) + str(remote_ready)
    assert "memory_off" in local
    assert "memory_off" not in remote
    assert remote["prompts"]["problems"] == 0
