"""Each send path against a local DingTalk: session webhook, retries, the OpenAPI fallback, the outbox."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import api.app
from agent.settings.config import Settings
from tests.conftest import SECRET, RunningApp, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.store import sql
from tests.waiting import PATIENCE, wait_until

WEBHOOK = "/robot/sendBySession"
GROUP_SEND = "/v1.0/robot/groupMessages/send"
ONE_TO_ONE_SEND = "/v1.0/robot/oToMessages/batchSend"
TOKEN = "/v1.0/oauth2/accessToken"


def post(app: RunningApp, body: dict[str, Any]) -> None:
    response = app.post_callback(encode(body), signed_headers(SECRET))
    assert response.status_code == 200, response.text


def outbox_rows(where: Settings) -> list[tuple[Any, ...]]:
    return sql(where, "SELECT msg_id, state, attempts, body, route FROM outbox ORDER BY id")


def first_state(where: Settings) -> str:
    rows = outbox_rows(where)
    return rows[0][1] if rows else ""


def more_checks(app: RunningApp, count: int = 2) -> None:
    """Wait until `count` more periodic checks have run (the last of them started after this call)."""
    check = app.server.config.app.state.services.check
    runs = check.runs
    wait_until(lambda: check.runs >= runs + count, what=f"{count} more periodic checks")


def test_expired_session_webhook_falls_back_to_the_one_to_one_send(
    app_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.errcodes.append(300001)
    settings = app_settings()
    body = callback(fake_dingtalk.webhook(), "会话过期了")
    with serve(settings) as app:
        post(app, body)
        [sent] = fake_dingtalk.wait_for(1, path=ONE_TO_ONE_SEND)
    assert len(fake_dingtalk.posts(WEBHOOK)) == 1  # tried once: 300001 is not retried on the webhook
    [token_request] = fake_dingtalk.posts(TOKEN)
    assert token_request.json() == {"appKey": "dingappkey", "appSecret": "app-secret-value"}
    assert sent.headers["x-acs-dingtalk-access-token"] == "token-1"
    request = sent.json()
    assert request["robotCode"] == body["robotCode"]
    assert request["userIds"] == [body["senderStaffId"]]
    assert request["msgKey"] == "sampleText"
    assert "「会话过期了」" in json.loads(request["msgParam"])["content"]  # msgParam is a JSON string
    [(msg_id, state, _, stored_body, stored_route)] = outbox_rows(settings)
    assert (msg_id, state, stored_body, stored_route) == (body["msgId"], "sent", None, None)


def test_a_group_reply_past_its_webhook_expiry_goes_straight_to_the_group_send(
    app_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    now = int(time.time() * 1000)
    body = callback(fake_dingtalk.webhook(), "群里问", group=True, sessionWebhookExpiredTime=now - 1000)
    with serve(app_settings()) as app:
        post(app, body)
        post(app, callback(fake_dingtalk.webhook(), "再问", group=True, sessionWebhookExpiredTime=now - 1000))
        sent = fake_dingtalk.wait_for(2, path=GROUP_SEND)
    assert fake_dingtalk.posts(WEBHOOK) == []
    assert len(fake_dingtalk.posts(TOKEN)) == 1  # the token is cached
    assert {r.json()["openConversationId"] for r in sent} == {body["conversationId"]}
    assert all(r.json()["robotCode"] == body["robotCode"] for r in sent)


def test_an_expired_token_is_fetched_again_once(
    app_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.errcodes.extend([300001, 300001])
    fake_dingtalk.openapi_statuses.extend([200, 401])
    with serve(app_settings()) as app:
        post(app, callback(fake_dingtalk.webhook(), "一"))
        fake_dingtalk.wait_for(1, path=ONE_TO_ONE_SEND)
        post(app, callback(fake_dingtalk.webhook(), "二"))
        sent = fake_dingtalk.wait_for(3, path=ONE_TO_ONE_SEND)
    assert [r.headers["x-acs-dingtalk-access-token"] for r in sent] == ["token-1", "token-1", "token-2"]


def test_without_app_credentials_an_expired_webhook_is_logged_with_the_fix(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, caplog: pytest.LogCaptureFixture
) -> None:
    fake_dingtalk.errcodes.append(300001)
    settings = make_settings()
    with serve(settings) as app:
        post(app, callback(fake_dingtalk.webhook(), "过期"))
        wait_until(lambda: first_state(settings) == "failed")
    assert "set DINGTALK_CLIENT_ID and DINGTALK_CLIENT_SECRET" in caplog.text
    assert fake_dingtalk.posts(TOKEN) == []


def test_server_errors_are_retried_at_once(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.statuses.extend([503, 502])
    settings = make_settings()
    with serve(settings) as app:
        post(app, callback(fake_dingtalk.webhook(), "服务器错误"))
        fake_dingtalk.wait_for(3, path=WEBHOOK)
        wait_until(lambda: first_state(settings) == "sent")
        metrics = app.client.get("/metrics").text
    assert 'dingbot_sends_total{errcode="http_503",via="session_webhook"} 1.0' in metrics
    assert 'dingbot_sends_total{errcode="0",via="session_webhook"} 1.0' in metrics
    bodies = fake_dingtalk.replies()
    assert bodies[0] == bodies[1] == bodies[2]


def test_a_timed_out_send_is_retried_later_not_at_once(
    make_settings: Callable[..., Settings],
    fake_dingtalk: FakeDingTalk,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # DingTalk may have taken a send whose answer never came: no quick retry (a likely duplicate), the
    # periodic check tries again after the backoff.
    monkeypatch.setattr(api.app, "SEND_TIMEOUT_SECONDS", 2.0)  # any send but the held one: well within
    fake_dingtalk.holds.append(threading.Event())  # the first send's answer never comes
    settings = make_settings(check_interval_seconds=0.2)
    with serve(settings) as app:
        post(app, callback(fake_dingtalk.webhook(), "超时"))
        wait_until(lambda: first_state(settings) == "sent")
        metrics = app.client.get("/metrics").text
    assert 'dingbot_sends_total{errcode="transport",via="session_webhook"} 1.0' in metrics
    assert len(fake_dingtalk.posts(WEBHOOK)) == 2
    [(_, state, attempts, _, _)] = outbox_rows(settings)
    assert (state, attempts) == ("sent", 2)  # two rounds: the timed-out one, then the check's
    assert "not sent (timed out waiting for the answer (SocketTimeoutError)); next try in" in caplog.text


def test_a_reply_that_keeps_failing_waits_in_the_outbox_and_the_periodic_check_sends_it(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.statuses.extend([503, 503, 503, 503])  # the first try and both quick retries, then one more
    settings = make_settings(check_interval_seconds=0.2)
    with serve(settings) as app:
        post(app, callback(fake_dingtalk.webhook(), "稍后送达"))
        wait_until(lambda: first_state(settings) == "sent")
        more_checks(app)  # later checks must not send it again
    bodies = fake_dingtalk.replies()
    assert len(bodies) == 5  # three tries at once; from the check, one more failure and the success
    assert all(b == bodies[0] for b in bodies)
    [(_, state, attempts, _, _)] = outbox_rows(settings)
    assert (state, attempts) == ("sent", 2)  # two rounds: the immediate one, then the check's


def test_other_errcodes_are_not_retried_and_their_meaning_is_logged(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, caplog: pytest.LogCaptureFixture
) -> None:
    fake_dingtalk.errcodes.append(400013)
    settings = make_settings(check_interval_seconds=0.1)
    with serve(settings) as app:
        post(app, callback(fake_dingtalk.webhook(), "机器人被移出群"))
        wait_until(lambda: first_state(settings) == "failed")
        more_checks(app)  # later checks must not retry it
    assert len(fake_dingtalk.posts(WEBHOOK)) == 1
    assert "the robot is not in this conversation any more" in caplog.text


def test_forget_all_removes_the_persons_unsent_reply_text(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.errcodes.append(400013)  # this reply is given up and keeps its text
    settings = make_settings()
    with serve(settings) as app:
        post(app, callback(fake_dingtalk.webhook(), "我的秘密计划"))
        wait_until(lambda: first_state(settings) == "failed")
        assert "我的秘密计划" in (outbox_rows(settings)[0][3] or "")
        post(app, callback(fake_dingtalk.webhook(), "/forget all"))
        fake_dingtalk.wait_for(2)
        wait_until(lambda: all(row[1] == "sent" for row in outbox_rows(settings)))
    stored = " ".join(str(v) for row in sql(settings, "SELECT * FROM outbox") for v in row)
    stored += " ".join(str(v) for row in sql(settings, "SELECT * FROM inbox") for v in row)
    assert "我的秘密计划" not in stored
    assert len(outbox_rows(settings)) == 1  # only the confirmation's (sent, textless) row


def test_the_session_webhook_sender_tells_a_send_that_never_left_from_one_whose_answer_was_lost() -> None:
    """Nothing listening: not sent, retried at once. A server that reads the request and hangs up: it may
    have been taken, so retried later only (uncertain). The URL is never in the detail."""
    import socket

    from api.dingtalk.sender import SessionWebhookSender

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]  # bound, never listening: refused

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    taker = threading.Thread(target=hang_up, daemon=True)
    taker.start()

    async def go() -> list[Any]:
        async with SessionWebhookSender(timeout=5.0, connect_timeout=2.0) as sender:
            body = {"msgtype": "text", "text": {"content": "你好"}}
            return [
                await sender.send(f"http://127.0.0.1:{refused_port}/robot/send?session=SECRET1", body),
                await sender.send(f"http://127.0.0.1:{listener.getsockname()[1]}/x?session=SECRET2", body),
            ]

    refused, dropped = asyncio.run(go())
    taker.join(PATIENCE)
    listener.close()
    assert (refused.ok, refused.retryable, refused.uncertain) == (False, True, False)
    assert refused.detail == "transport error (ClientConnectorError)"
    assert (dropped.ok, dropped.retryable, dropped.uncertain) == (False, True, True)
    assert dropped.detail == "answer lost (ServerDisconnectedError)"
