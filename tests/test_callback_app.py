"""Signed callbacks through the running app (real uvicorn, real SQLite) to a local fake DingTalk."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import api.app
from agent.settings.config import Settings
from tests.conftest import SECRET, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.store import sql
from tests.waiting import PATIENCE, wait_until


def post(app: Any, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return app.post_callback(encode(body), headers if headers is not None else signed_headers(SECRET))


def test_signed_text_message_is_acked_empty_before_it_is_answered(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ack never waits for the answer: DingTalk holds the reply until the ack is in hand. (How fast
    either is, is for bench/, not a test.)"""
    monkeypatch.setattr(api.app, "SEND_TIMEOUT_SECONDS", 2 * PATIENCE)  # the held send is not given up on
    answer = threading.Event()
    fake_dingtalk.holds.append(answer)
    with serve(make_settings()) as app:
        response = post(app, callback(fake_dingtalk.webhook(), "今天天气怎么样？"))
        assert response.status_code == 200
        assert response.json() == {"msgtype": "empty"}
        answer.set()
        [request] = fake_dingtalk.wait_for(1)
    assert request.path == "/robot/sendBySession?session=s1"
    body = request.json()
    assert body["msgtype"] == "text"
    assert "模拟回复" in body["text"]["content"]
    assert "「今天天气怎么样？」" in body["text"]["content"]
    assert "0 轮历史对话" in body["text"]["content"]
    assert body["at"] == {"isAtAll": False}


def test_a_reply_being_sent_holds_no_answer_slot(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WORKERS bounds the answers being made at once (the model's calls), not the sends: with one slot, a
    reply whose send DingTalk holds leaves the next conversation's message free to be answered and sent
    (before, that message waited for the held send)."""
    monkeypatch.setattr(api.app, "SEND_TIMEOUT_SECONDS", 2 * PATIENCE)  # the held send is not given up on
    first_send = threading.Event()
    fake_dingtalk.holds.append(first_send)
    with serve(make_settings(workers=1)) as app:
        try:
            post(app, callback(fake_dingtalk.webhook(), "第一个人的问题"))
            fake_dingtalk.wait_for(1)  # its reply is on the wire, unanswered
            other = callback(fake_dingtalk.webhook("s2"), "另一个人的问题", senderStaffId="staff2")
            post(app, {**other, "conversationId": "cidAnotherPerson=="})
            [_, second] = fake_dingtalk.wait_for(2)  # answered and sent while the first send is held
        finally:
            first_send.set()
        fake_dingtalk.wait_for(2)
    assert "另一个人的问题" in second.json()["text"]["content"]


def test_second_message_sees_the_first_turn_as_history(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    with serve(make_settings()) as app:
        post(app, callback(fake_dingtalk.webhook(), "第一句"))
        fake_dingtalk.wait_for(1)
        post(app, callback(fake_dingtalk.webhook(), "第二句"))
        fake_dingtalk.wait_for(2)
    second = fake_dingtalk.replies()[1]["text"]["content"]
    assert "「第二句」" in second
    assert "1 轮历史对话" in second


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing timestamp or sign header"),
        ({"timestamp": "1577262236757"}, "missing timestamp or sign header"),
        ({"timestamp": "abc", "sign": "x"}, "timestamp header is not a millisecond number"),
        ("stale", "timestamp outside the accepted window"),
        ("wrong-secret", "signature does not match"),
    ],
)
def test_bad_signatures_get_401_with_a_reason_and_no_reply(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, headers: Any, reason: str
) -> None:
    if headers == "stale":
        headers = signed_headers(SECRET, int(time.time() * 1000) - 3601 * 1000)
    elif headers == "wrong-secret":
        headers = signed_headers("another secret")
    with serve(make_settings()) as app:
        response = post(app, callback(fake_dingtalk.webhook()), headers)
        assert response.status_code == 401
        assert reason in response.json()["error"]
        assert app.client.get("/healthz").status_code == 200
    assert fake_dingtalk.requests == []


def test_sign_window_is_configurable(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    headers = signed_headers(SECRET, int(time.time() * 1000) - 120 * 1000)
    with serve(make_settings(dingtalk_sign_window_seconds=60)) as app:
        assert post(app, callback(fake_dingtalk.webhook()), headers).status_code == 401
    with serve(make_settings(dingtalk_sign_window_seconds=300)) as app:
        assert post(app, callback(fake_dingtalk.webhook()), headers).status_code == 200


def test_client_secret_verifies_when_secret_is_unset(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    settings = make_settings(secret=None, dingtalk_client_secret="app secret")
    with serve(settings) as app:
        assert post(app, callback(fake_dingtalk.webhook()), signed_headers(SECRET)).status_code == 401
        assert post(app, callback(fake_dingtalk.webhook()), signed_headers("app secret")).status_code == 200


def test_outgoing_token_header_is_accepted(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    settings = make_settings(dingtalk_outgoing_token="tok-123")
    with serve(settings) as app:
        assert post(app, callback(fake_dingtalk.webhook()), {"token": "tok-123"}).status_code == 200
        wrong = post(app, callback(fake_dingtalk.webhook()), {"token": "nope"})
        assert wrong.status_code == 401
        assert "DINGTALK_OUTGOING_TOKEN" in wrong.json()["error"]
        # a correct signature still works for the same robot
        assert post(app, callback(fake_dingtalk.webhook())).status_code == 200


def test_unsigned_callbacks_only_in_mock_mode(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, fake_openai: Any, tmp_path: Path
) -> None:
    with serve(make_settings(secret=None)) as app:
        assert post(app, callback(fake_dingtalk.webhook()), {}).status_code == 200
    real = make_settings(
        secret=None,
        database_path=tmp_path / "real" / "db.sqlite",
        force_mock_openai=False,
        openai_api_key="sk-test",
        openai_api_base=f"{fake_openai.url}/v1",
    )
    with serve(real) as app:
        response = post(app, callback(fake_dingtalk.webhook()), {})
        assert response.status_code == 401
        assert "SECRET" in response.json()["error"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (b"\xff\xfe", "body is not valid JSON"),
    ],
)
def test_malformed_bodies_get_400(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, raw: bytes, reason: str
) -> None:
    with serve(make_settings()) as app:
        response = app.post_callback(raw, signed_headers(SECRET))
        assert response.status_code == 400
        assert response.json()["error"] == reason


@pytest.mark.parametrize(
    "field", ["msgId", "msgtype", "conversationId", "conversationType", "senderId", "sessionWebhook"]
)
def test_each_missing_required_field_gets_400_naming_it(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, field: str
) -> None:
    body = callback(fake_dingtalk.webhook())
    del body[field]
    with serve(make_settings()) as app:
        response = post(app, body)
        assert response.status_code == 400
        assert response.json()["error"] == f"missing field: {field}"
    assert fake_dingtalk.requests == []


def test_session_webhook_on_a_foreign_host_is_refused(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, fake_openai: Any, tmp_path: Path
) -> None:
    real = make_settings(
        database_path=tmp_path / "real" / "db.sqlite",
        force_mock_openai=False,
        openai_api_key="sk-test",
        openai_api_base=f"{fake_openai.url}/v1",
    )
    with serve(real) as app:
        for url in (
            "https://evil.example/robot/sendBySession?session=1",
            f"{fake_dingtalk.url}@evil.example/robot",
            fake_dingtalk.url.replace("127.0.0.1", "localhost"),  # this machine, but not the configured host
            fake_dingtalk.url.replace("http://", "https://"),
        ):
            response = post(app, callback(url))
            assert response.status_code == 400, url
            assert "not on a configured DingTalk host" in response.json()["error"]
            on_this_machine = httpx.URL(url).host in ("localhost", "127.0.0.1")
            assert ("accepted in mock mode only" in response.json()["error"]) is on_this_machine


def test_mock_mode_also_replies_to_webhooks_on_this_machine_and_nowhere_else(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    """So `dingbot simulate` and `dingbot catch` work against the quick-start server with no set-up."""
    with serve(make_settings(dingtalk_oapi_base="https://oapi.dingtalk.com")) as app:
        for url in (
            "https://evil.example/robot/sendBySession?session=1",
            f"{fake_dingtalk.url}@evil.example/x",
        ):
            response = post(app, callback(url))
            assert response.status_code == 400, url
        on_this_machine = fake_dingtalk.webhook().replace("127.0.0.1", "localhost")
        # Through a proxy the sender is elsewhere: pointing the service at this machine is refused then.
        proxied = signed_headers(SECRET) | {"X-Forwarded-For": "203.0.113.7"}
        refused = post(app, callback(on_this_machine, "经代理"), proxied)
        assert refused.status_code == 400
        assert refused.json()["error"].endswith("in mock mode only, for callbacks sent on this machine")
        assert post(app, callback(on_this_machine, "你好")).status_code == 200
        [request] = fake_dingtalk.wait_for(1, timeout=10.0)
    assert "「你好」" in request.json()["text"]["content"]


def test_duplicate_msg_id_is_answered_once(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    body = callback(fake_dingtalk.webhook(), "只回答一次")
    with serve(make_settings()) as app:
        codes = [post(app, body).status_code for _ in range(5)]
        fake_dingtalk.wait_for(1)
        time.sleep(0.3)
        assert codes == [200] * 5
    assert len(fake_dingtalk.requests) == 1


def test_duplicate_is_remembered_across_restarts(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    settings = make_settings()
    body = callback(fake_dingtalk.webhook())
    with serve(settings) as app:
        post(app, body)
        fake_dingtalk.wait_for(1)
    with serve(settings) as app:
        assert post(app, body).json() == {"msgtype": "empty"}
        time.sleep(0.3)
    assert len(fake_dingtalk.requests) == 1


def test_group_reply_mentions_the_sender(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    with serve(make_settings()) as app:
        post(app, callback(fake_dingtalk.webhook(), "群里问个问题", group=True))
        [request] = fake_dingtalk.wait_for(1)
    body = request.json()
    assert body["at"] == {"isAtAll": False, "atUserIds": ["042217062297"]}
    assert body["text"]["content"].startswith("@042217062297 【模拟回复】")
    assert "「群里问个问题」" in body["text"]["content"]  # leading space stripped


def test_group_sender_without_staff_id_gets_nick_mention(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    with serve(make_settings()) as app:
        post(app, callback(fake_dingtalk.webhook(), "外部用户", group=True, senderStaffId=""))
        [request] = fake_dingtalk.wait_for(1)
    body = request.json()
    assert body["at"] == {"isAtAll": False}
    assert body["text"]["content"].startswith("@张三 ")


def test_group_message_addressed_to_someone_else_is_not_answered(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    body = callback(
        fake_dingtalk.webhook(),
        "@李四 你看下",
        group=True,
        isInAtList=False,
        atUsers=[{"dingtalkId": "$:other"}],
    )
    with serve(make_settings()) as app:
        assert post(app, body).json() == {"msgtype": "empty"}
        time.sleep(0.3)
    assert fake_dingtalk.requests == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"msgtype": "richText", "content": {"richText": [{"text": "@小钉"}, {"text": "富文本问题"}]}},
            "「富文本问题」",
        ),
        (
            {
                "msgtype": "richText",
                "content": json.dumps({"richText": [{"text": "字符串形式"}]}, ensure_ascii=False),
            },
            "「字符串形式」",
        ),
        (
            {"msgtype": "audio", "content": {"downloadCode": "x", "recognition": "语音转的文字"}},
            "「[语音] 语音转的文字」",  # answered from DingTalk's recognition, marked as spoken
        ),
        # Mock mode, a webhook on this machine: fetched from the local stand-in, which has no such file.
        ({"msgtype": "picture", "content": {"downloadCode": "x"}}, "这张图片的下载链接已失效"),
        (
            {"msgtype": "file", "content": {"fileName": "a.pdf"}},
            "暂时看不懂这种类型的消息",
        ),  # no download code
        ({"msgtype": "video", "content": {}}, "暂时看不懂视频"),
        ({"msgtype": "unknownMsgType"}, "暂时看不懂这种类型的消息"),
        (
            {"msgtype": "richText", "content": {"richText": [{"downloadCode": "p", "type": "picture"}]}},
            "这张图片的下载链接已失效",
        ),
        ({"msgtype": "audio", "content": {"downloadCode": "x"}}, "没听清，请再说一遍或打字。"),
        ({"msgtype": "text", "text": {"content": "   "}}, "有什么可以帮你"),
    ],
)
def test_each_message_type_gets_the_right_answer(
    make_settings: Callable[..., Settings],
    fake_dingtalk: FakeDingTalk,
    overrides: dict[str, Any],
    expected: str,
) -> None:
    body = callback(fake_dingtalk.webhook())
    body.pop("text")
    body.update(overrides)
    with serve(make_settings()) as app:
        assert post(app, body).status_code == 200
        [request] = fake_dingtalk.wait_for(1, path="/robot/sendBySession")
    assert expected in request.json()["text"]["content"]


def test_a_voice_message_is_kept_in_history_as_spoken(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    voice = callback(fake_dingtalk.webhook())
    voice.pop("text")
    voice.update(msgtype="audio", content={"downloadCode": "x", "recognition": "明天开会"})
    settings = make_settings()
    with serve(settings) as app:
        post(app, voice)
        fake_dingtalk.wait_for(1)
    # written after the reply went out; the app drained its work before it stopped
    assert sql(settings, "SELECT role, content FROM history ORDER BY id")[0] == ("human", "[语音] 明天开会")


def test_errcode_from_dingtalk_is_read_and_the_server_stays_healthy(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, caplog: pytest.LogCaptureFixture
) -> None:
    fake_dingtalk.errcodes.append(300001)
    with serve(make_settings()) as app:
        post(app, callback(fake_dingtalk.webhook(), "第一条"))
        fake_dingtalk.wait_for(1)
        wait_until(lambda: "errcode 300001" in caplog.text, what="the errcode read and logged")
        assert app.client.get("/healthz").json()["status"] == "ok"
        # the failed turn is not in history: the next answer sees 0 turns
        post(app, callback(fake_dingtalk.webhook(), "第二条"))
        fake_dingtalk.wait_for(2)
    assert "errcode 300001" in caplog.text
    assert "session webhook expired" in caplog.text
    assert "0 轮历史对话" in fake_dingtalk.replies()[1]["text"]["content"]


def test_redelivery_of_a_message_whose_reply_failed_is_answered(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.errcodes.append(310000)
    body = callback(fake_dingtalk.webhook(), "重投")
    with serve(make_settings()) as app:
        post(app, body)
        fake_dingtalk.wait_for(1)

        def redelivered_and_answered() -> bool:  # redeliver until the failure is recorded
            post(app, body)
            return len(fake_dingtalk.requests) >= 2

        wait_until(redelivered_and_answered, what="a redelivery answered", every=0.05)
        post(app, body)  # answered now: further redeliveries are dropped
        time.sleep(0.3)
    assert len(fake_dingtalk.requests) == 2
    assert "「重投」" in fake_dingtalk.replies()[1]["text"]["content"]


def test_concurrent_duplicates_get_one_reply(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    import concurrent.futures

    body = encode(callback(fake_dingtalk.webhook(), "并发重复"))
    with serve(make_settings()) as app:
        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
            codes = list(
                pool.map(lambda _: app.post_callback(body, signed_headers(SECRET)).status_code, range(20))
            )
        fake_dingtalk.wait_for(1)
        time.sleep(0.3)
    assert codes == [200] * 20
    assert len(fake_dingtalk.requests) == 1
