"""Operator alerts through the custom robot (ACCESS_TOKEN): what goes wrong reaches the robot's group once
per window, and a person is told "已通知管理员" only when that is true."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from agent.observe import Problem
from agent.prompts.library import PromptLibrary
from agent.settings.config import DEFAULT_PROMPTS_DIR, Settings
from agent.storage.database import Database
from api.alerts import OperatorAlerts
from api.delivery.courier import Courier
from api.delivery.outbox import Outbox
from api.dingtalk.robot_webhook import RobotWebhookSender
from api.dingtalk.sender import SessionWebhookSender
from tests.conftest import SECRET, serve
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk

KEY = "sk-test-key-0123456789abcdef"
TOLD = "已通知管理员处理。"


def alerting(make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "force_mock_openai": False,
        "openai_api_key": KEY,
        "openai_api_base": f"{fake_openai.url}/v1",
        "openai_max_retries": 0,
        "access_token": "robot-token-123",  # the custom robot's webhook on the fake DingTalk
    }
    return make_settings(**(values | overrides))


def robot_texts(dingtalk: FakeDingTalk) -> list[str]:
    return [r.json()["text"]["content"] for r in dingtalk.posts("/robot/send")]


def say(app: Any, dingtalk: FakeDingTalk, text: str, replies: int) -> str:
    app.post_callback(encode(callback(dingtalk.webhook(), text)), signed_headers(SECRET))
    dingtalk.wait_for(replies, timeout=30, path="/robot/sendBySession")
    return str(dingtalk.replies()[replies - 1]["text"]["content"])


def wait_for_robot(dingtalk: FakeDingTalk, count: int) -> list[str]:
    dingtalk.wait_for(count, timeout=30, path="/robot/send?")  # not /robot/sendBySession
    return robot_texts(dingtalk)


def test_a_refused_key_alerts_the_group_once_and_the_person_is_told_so(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_openai.script.extend([Scripted(status=401), Scripted(status=401), Scripted(text="好的，已经恢复。")])
    with serve(alerting(make_settings, fake_openai)) as app:
        first = say(app, fake_dingtalk, "你好", 1)
        [alert] = wait_for_robot(fake_dingtalk, 1)
        second = say(app, fake_dingtalk, "还在吗", 2)
        third = say(app, fake_dingtalk, "现在呢", 3)
        texts = wait_for_robot(fake_dingtalk, 2)
        metrics = app.client.get("/metrics").text
    assert first == "抱歉，模型服务拒绝了认证（API Key 无效或已过期），暂时无法回答。" + TOLD
    assert second == first  # told within the window: still true, and no second alert
    assert third == "好的，已经恢复。"
    assert alert.startswith("【小钉 告警】模型服务不可用\n原因：认证失败：")
    assert f"{fake_openai.url}/v1 返回 HTTP 401" in alert
    assert "处理：检查 OPENAI_API_KEY 是否完整且有效" in alert
    assert KEY not in alert
    assert "robot-token-123" not in alert
    assert texts == [alert, "【小钉】告警「模型服务不可用」已解除，恢复正常。"]
    assert 'dingbot_problems_total{key="model"} 2.0' in metrics  # each failed answer reports it


def test_an_alert_that_cannot_be_delivered_is_never_claimed(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_openai.script.extend([Scripted(status=401), Scripted(status=401)])
    fake_dingtalk.robot_errcodes.extend([310000, 310000])  # keywords / signature do not match
    with serve(alerting(make_settings, fake_openai)) as app:
        first = say(app, fake_dingtalk, "你好", 1)
        second = say(app, fake_dingtalk, "还在吗", 2)
    assert TOLD not in first
    assert TOLD not in second


def test_without_an_access_token_nobody_is_said_to_be_told(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_openai.script.append(Scripted(status=401))
    settings = alerting(make_settings, fake_openai, access_token=None)
    with serve(settings) as app:
        text = say(app, fake_dingtalk, "你好", 1)
    assert text == "抱歉，模型服务拒绝了认证（API Key 无效或已过期），暂时无法回答。"
    assert fake_dingtalk.posts("/robot/send") == []


def test_a_wrong_base_at_startup_alerts_before_anyone_writes(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_openai.models = ("llama3",)
    settings = alerting(make_settings, fake_openai, openai_model="qwen2.5")
    with serve(settings):
        [alert] = wait_for_robot(fake_dingtalk, 1)
    assert alert.startswith("【小钉 告警】模型服务不可用\n原因：模型 'qwen2.5' 在")
    assert "处理：把 OPENAI_MODEL 设为列表中的模型，例如 llama3" in alert


def test_a_reply_given_up_alerts_the_group(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.errcodes.append(400013)  # not retried: the reply is given up at once
    with serve(alerting(make_settings, fake_openai)) as app:
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "你好")), signed_headers(SECRET))
        texts = wait_for_robot(fake_dingtalk, 1)
    assert texts[0].startswith("【小钉 告警】回复发送失败\n原因：一条回复最终没有发出去：errcode 400013")


PROBLEM = Problem("model", "model endpoint failing", "模型服务不可用", "c", "原因", "f", "处理")


def run_alerts(
    tmp_path: Path, dingtalk: FakeDingTalk, script: Callable[[OperatorAlerts, list[float]], Awaitable[Any]]
) -> Any:
    """The real alerts, courier, outbox and robot sender against the fake DingTalk, on a clock the
    test moves (the repeat window is an hour: nobody waits for it)."""

    async def go() -> Any:
        database = Database(tmp_path / "alerts.db")
        await database.open()
        try:
            async with httpx.AsyncClient(timeout=10) as http, SessionWebhookSender() as webhook:
                robot = RobotWebhookSender(
                    http, oapi_base=dingtalk.url, access_token=SecretStr("t"), secret=SecretStr("s")
                )
                courier = Courier(outbox=Outbox(database), webhook=webhook, openapi=None, robot=robot)
                settings = Settings(_env_file=None, force_mock_openai=True, access_token="t")  # type: ignore[call-arg]
                now = [1000.0]
                alerts = OperatorAlerts(
                    settings=settings,
                    courier=courier,
                    prompts=PromptLibrary(DEFAULT_PROMPTS_DIR),
                    clock=lambda: now[0],
                )
                result = await script(alerts, now)
                await alerts.close()
                return result
        finally:
            await database.close()

    return asyncio.run(go())


def test_one_alert_per_window_and_a_problem_back_after_its_resolution_is_not_alerted_again(
    tmp_path: Path, fake_dingtalk: FakeDingTalk
) -> None:
    async def script(alerts: OperatorAlerts, now: list[float]) -> list[bool]:
        told = [await alerts.problem(PROBLEM)]  # sent
        now[0] += 59 * 60
        told.append(await alerts.problem(PROBLEM))  # within the window: they know, no second alert
        alerts.resolved("model")
        alerts.resolved("model")  # said once
        now[0] += 30
        told.append(await alerts.problem(PROBLEM))  # flapping: not alerted again, and not claimed
        now[0] += 60 * 60
        told.append(await alerts.problem(PROBLEM))  # a new window: alerted again
        return told

    assert run_alerts(tmp_path, fake_dingtalk, script) == [True, True, False, True]
    texts = robot_texts(fake_dingtalk)
    assert len(texts) == 3
    assert texts[0] == texts[2] == "【小钉 告警】模型服务不可用\n原因：原因\n处理：处理"
    assert texts[1] == "【小钉】告警「模型服务不可用」已解除，恢复正常。"


def test_concurrent_reports_of_an_alert_that_fails_all_learn_that_it_failed(
    tmp_path: Path, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.robot_errcodes.extend([310000] * 3)

    async def script(alerts: OperatorAlerts, now: list[float]) -> list[bool]:
        return list(await asyncio.gather(*(alerts.problem(PROBLEM) for _ in range(3))))

    assert run_alerts(tmp_path, fake_dingtalk, script) == [False, False, False]
    assert len(fake_dingtalk.posts("/robot/send")) == 1  # one alert, however many asked


def test_at_most_ten_alerts_a_window_of_all_kinds(tmp_path: Path, fake_dingtalk: FakeDingTalk) -> None:
    async def script(alerts: OperatorAlerts, now: list[float]) -> list[bool]:
        return [await alerts.problem(replace(PROBLEM, key=f"k{n}")) for n in range(11)]

    assert run_alerts(tmp_path, fake_dingtalk, script) == [True] * 10 + [False]
    assert len(fake_dingtalk.posts("/robot/send")) == 10
