"""Typewriter replies in an AI card: the real app, a real model client streaming from a local
OpenAI-compatible server, the card calls and the fallbacks against a local DingTalk."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import api.app
from agent.settings.config import Settings
from tests.conftest import SECRET, RunningApp, serve
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.store import sql
from tests.waiting import PATIENCE, wait_until

KEY = "sk-live-looking-key-abcdefghijklmnopqrstu"
TEMPLATE = "382e4302-551d-4880-bf29-a30acfab2e71.schema"
ANSWER = "第一步：打开钉钉。\n第二步：找到工作台。\n第三步：点开审批，提交报销单。"
WEBHOOK = "/robot/sendBySession"


@pytest.fixture
def card_settings(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "force_mock_openai": False,
            "openai_api_key": KEY,
            "openai_api_base": f"{fake_openai.url}/v1",
            "openai_model": "qwen2.5",
            "openai_max_retries": 0,
            "openai_timeout": 5,
            "embedding_provider": "local",
            "dingtalk_client_id": "dingappkey",
            "dingtalk_client_secret": "app-secret-value",
            "dingtalk_api_base": fake_dingtalk.url,
            "dingtalk_card_template_id": TEMPLATE,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


def post(app: RunningApp, body: dict[str, Any]) -> None:
    response = app.post_callback(encode(body), signed_headers(SECRET))
    assert response.status_code == 200, response.text


def calls_named(fake: FakeDingTalk, name: str) -> list[dict[str, Any]]:
    return [body for call, body in fake.card_calls() if call == name]


def outbox_states(where: Settings) -> list[tuple[int, str]]:
    return [
        (int(part), str(state)) for part, state in sql(where, "SELECT part, state FROM outbox ORDER BY part")
    ]


def test_the_answer_streams_into_a_card_with_throttled_full_updates_and_is_finished(
    card_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_openai.script.append(Scripted(text=ANSWER))
    fake_openai.stream_piece_delay = 0.08  # the model writes faster than a card may be updated (0.6 s)

    def shown(text: str) -> bool:
        return any(update["content"] == text for update in calls_named(fake_dingtalk, "update"))

    def pace(so_far: str) -> None:  # at two points the model goes on only once the card shows its text
        if len(so_far) in (12, 24):
            wait_until(lambda: shown(so_far), what=f"the card showing {so_far!r}")

    fake_openai.after_piece = pace
    settings = card_settings(openai_timeout=2 * PATIENCE)  # the paced model may pause longer than 5 s
    with serve(settings) as app:
        post(app, callback(fake_dingtalk.webhook(), "怎么提交报销？"))
        wait_until(lambda: bool(calls_named(fake_dingtalk, "finish")))
    names = [name for name, _ in fake_dingtalk.card_calls()]
    assert names[:2] == ["create", "deliver"]
    assert names[-1] == "finish"
    create, deliver = calls_named(fake_dingtalk, "create")[0], calls_named(fake_dingtalk, "deliver")[0]
    assert create["cardTemplateId"] == TEMPLATE
    assert create["cardData"]["cardParamMap"]["flowStatus"] == "1"
    assert deliver["openSpaceId"] == "dtv1.card//IM_ROBOT.042217062297"  # the sender's staff id
    assert deliver["outTrackId"] == create["outTrackId"]
    updates = calls_named(fake_dingtalk, "update")
    assert len(updates) >= 3  # streamed, not one wall of text (two paced updates and the final one)
    contents = [u["content"] for u in updates]
    assert all(ANSWER.startswith(c) for c in contents)  # each update is the whole text so far
    assert contents == sorted(contents, key=len)
    assert all(u["isFull"] and u["outTrackId"] == create["outTrackId"] for u in updates)
    assert len({u["guid"] for u in updates}) == len(updates)  # a fresh guid each time
    streaming = [u for u in updates if not u["isFinalize"]]
    times = [r for r in fake_dingtalk.requests if r.path == "/v1.0/card/streaming"]
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.55 for gap in gaps[: len(streaming) - 1])  # throttled to ~600 ms
    final = updates[-1]
    assert (final["isFinalize"], final["isError"], final["content"]) == (True, False, ANSWER)
    finish = calls_named(fake_dingtalk, "finish")[0]["cardData"]["cardParamMap"]
    assert finish == {"flowStatus": "3", "content": ANSWER}
    assert fake_dingtalk.posts(WEBHOOK) == []  # the card carried the answer: no plain message too
    assert outbox_states(settings) == [(0, "sent"), (1, "skipped")]


def test_a_group_card_notifies_the_sender(
    card_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_openai.script.append(Scripted(text="好的"))
    with serve(card_settings()) as app:
        post(app, callback(fake_dingtalk.webhook(), "群里问一句", group=True))
        wait_until(lambda: bool(calls_named(fake_dingtalk, "finish")))
    deliver = calls_named(fake_dingtalk, "deliver")[0]
    assert deliver["openSpaceId"] == "dtv1.card//IM_GROUP.cidGroupAbc/x+1=="
    assert deliver["imGroupOpenDeliverModel"]["atUserIds"] == {"042217062297": "张三"}


def test_a_failing_model_still_finishes_the_card_as_failed_with_a_chinese_note(
    card_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_openai.script.append(Scripted(status=500))
    with serve(card_settings()) as app:
        post(app, callback(fake_dingtalk.webhook(), "你好"))
        wait_until(lambda: bool(calls_named(fake_dingtalk, "finish")))
    final = calls_named(fake_dingtalk, "update")[-1]
    assert (final["isFinalize"], final["isError"]) == (True, True)
    assert final["content"].startswith("模型服务暂时不可用")
    finish = calls_named(fake_dingtalk, "finish")[0]["cardData"]["cardParamMap"]
    assert finish["flowStatus"] == "5"


def test_the_watchdog_finishes_the_card_when_the_answer_takes_too_long(
    card_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    fake_dingtalk: FakeDingTalk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The deadline covers everything before the model too: the card must be open by then, so no memory
    # recall (CPU-heavy local embeddings) and 2 s for a few local HTTP calls.
    deadline = 2.0
    monkeypatch.setattr(Settings, "longest_answer_seconds", property(lambda self: deadline))
    # the model answers only when the test ends, and its own timeout is beyond every wait here: only the
    # watchdog can finish the card
    fake_openai.script.append(Scripted(text="太慢了", hold=threading.Event()))
    with serve(card_settings(openai_timeout=2 * PATIENCE, memory_top_k=0)) as app:
        started = time.monotonic()
        post(app, callback(fake_dingtalk.webhook(), "你好"))
        wait_until(lambda: bool(calls_named(fake_dingtalk, "finish")), what="the card finished")
        finished_after = time.monotonic() - started
    assert finished_after >= deadline  # when the watchdog's deadline passed, not before
    finish = calls_named(fake_dingtalk, "finish")[0]["cardData"]["cardParamMap"]
    assert finish["flowStatus"] == "5"
    assert finish["content"].startswith("抱歉，模型服务响应超时")


def test_a_card_still_being_opened_when_the_deadline_strikes_is_finished_not_left_spinning(
    card_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    fake_dingtalk: FakeDingTalk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deadline = 2.0
    monkeypatch.setattr(Settings, "longest_answer_seconds", property(lambda self: deadline))
    delivered = threading.Event()  # DingTalk shows the card but answers the delivery only later
    fake_dingtalk.card_holds["deliver"].append(delivered)
    try:
        with serve(card_settings(memory_top_k=0)) as app:
            post(app, callback(fake_dingtalk.webhook(), "你好"))
            wait_until(lambda: bool(calls_named(fake_dingtalk, "finish")), what="the card finished")
    finally:
        delivered.set()
    [created] = calls_named(fake_dingtalk, "create")
    finish = calls_named(fake_dingtalk, "finish")[0]
    assert finish["outTrackId"] == created["outTrackId"]  # the card that was being opened
    assert finish["cardData"]["cardParamMap"]["flowStatus"] == "5"
    assert finish["cardData"]["cardParamMap"]["content"].startswith("抱歉，模型服务响应超时")
    assert fake_openai.chats() == []  # the deadline struck before the model was asked


def test_a_refused_card_gives_way_to_a_markdown_reply_and_cards_pause(
    card_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.card_statuses["create"].append(403)  # no Card.Instance.Write permission
    fake_openai.script.append(Scripted(text="## 答案\n- 第一条"))  # later calls: the server's default
    with serve(card_settings()) as app:
        post(app, callback(fake_dingtalk.webhook("s1"), "第一个问题"))
        fake_dingtalk.wait_for(1, path=WEBHOOK)
        post(app, callback(fake_dingtalk.webhook("s2"), "第二个问题"))
        fake_dingtalk.wait_for(2, path=WEBHOOK)
    first, second = fake_dingtalk.replies()
    assert first["markdown"]["text"] == "## 答案\n- 第一条"
    assert second["msgtype"] == "text"  # a plain message, no card tried
    assert [name for name, _ in fake_dingtalk.card_calls()] == ["create"]  # paused after the 403


def test_a_card_that_cannot_be_finished_falls_back_to_the_session_webhook_then_the_openapi_send(
    card_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.card_statuses["update"].extend([429, 429])  # QPS limit: updates stop, the finish fails
    fake_dingtalk.errcodes.append(300001)  # and the session webhook has expired
    fake_openai.script.append(Scripted(text=ANSWER))
    settings = card_settings()
    with serve(settings) as app:
        post(app, callback(fake_dingtalk.webhook(), "怎么提交报销？"))
        [sent] = fake_dingtalk.wait_for(1, path="/v1.0/robot/oToMessages/batchSend")
    assert sent.json()["userIds"] == ["042217062297"]
    assert "第三步" in sent.json()["msgParam"]
    assert len(fake_dingtalk.posts(WEBHOOK)) == 1  # tried, expired
    # the card is not left spinning beside the plain reply: marked failed (best effort)
    [status] = [c["cardData"]["cardParamMap"]["flowStatus"] for c in calls_named(fake_dingtalk, "finish")]
    assert status == "5"
    wait_until(lambda: outbox_states(settings) == [(0, "skipped"), (1, "sent")])


def test_a_card_whose_status_update_fails_is_retried_without_a_second_finalize_or_a_plain_reply(
    card_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.card_statuses["finish"].append(503)
    fake_openai.script.append(Scripted(text="最终答案"))
    settings = card_settings(check_interval_seconds=0.2)
    with serve(settings) as app:
        post(app, callback(fake_dingtalk.webhook(), "你好"))
        wait_until(lambda: len(calls_named(fake_dingtalk, "finish")) == 2)
        wait_until(lambda: outbox_states(settings) == [(0, "sent"), (1, "skipped")])
    finalizes = [u for u in calls_named(fake_dingtalk, "update") if u["isFinalize"]]
    assert len(finalizes) == 1  # the retry only set the status
    assert fake_dingtalk.posts(WEBHOOK) == []


def test_a_403_on_a_card_update_pauses_cards(
    card_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.card_statuses["update"].extend([403, 403])  # Card.Streaming.Write missing
    fake_openai.script.append(Scripted(text=ANSWER))
    fake_openai.stream_piece_delay = 0.02
    with serve(card_settings()) as app:
        post(app, callback(fake_dingtalk.webhook("s1"), "第一个问题"))
        fake_dingtalk.wait_for(1, path=WEBHOOK)  # the plain fallback
        post(app, callback(fake_dingtalk.webhook("s2"), "第二个问题"))
        fake_dingtalk.wait_for(2, path=WEBHOOK)
    assert [name for name, _ in fake_dingtalk.card_calls()].count("create") == 1  # none for the second


def test_in_mock_mode_the_mock_model_streams_into_the_card(
    card_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    with serve(card_settings(force_mock_openai=True)) as app:
        post(app, callback(fake_dingtalk.webhook(), "模拟模式"))
        wait_until(lambda: bool(calls_named(fake_dingtalk, "finish")))
    final = calls_named(fake_dingtalk, "update")[-1]
    assert final["isFinalize"] is True
    assert "你说的是：「模拟模式」" in final["content"]


def test_plain_style_and_commands_never_open_a_card(
    card_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_openai.script.append(Scripted(text="普通回复"))
    with serve(card_settings(dingtalk_reply_style="plain")) as app:
        post(app, callback(fake_dingtalk.webhook(), "你好"))
        fake_dingtalk.wait_for(1, path=WEBHOOK)
    with serve(card_settings()) as app:
        post(app, callback(fake_dingtalk.webhook(), "/help"))
        fake_dingtalk.wait_for(2, path=WEBHOOK)
    assert fake_dingtalk.card_calls() == []


def test_a_card_is_finished_as_failed_when_the_service_stops_mid_answer(
    card_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    fake_dingtalk: FakeDingTalk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api.app, "SHUTDOWN_GRACE_SECONDS", 0.3)
    fake_openai.script.append(Scripted(text="来不及说完", hold=threading.Event()))  # answers only at the end
    with serve(card_settings(openai_timeout=2 * PATIENCE)) as app:
        post(app, callback(fake_dingtalk.webhook(), "你好"))
        wait_until(lambda: bool(calls_named(fake_dingtalk, "deliver")))
    finish = calls_named(fake_dingtalk, "finish")[0]["cardData"]["cardParamMap"]
    assert finish["flowStatus"] == "5"  # not left spinning; the message is answered again after restart
    assert finish["content"].startswith("抱歉，处理你的消息时出了点问题")
