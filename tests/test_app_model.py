"""The running app with a real model client against a local OpenAI-compatible server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from agent.settings.config import Settings
from tests.conftest import SECRET, serve
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.waiting import PATIENCE, wait_until

KEY = "sk-live-looking-key-abcdefghijklmnopqrstu"
WEBHOOK_SESSION = "session-credential-9f8e7d"
PRIVATE_TEXT = "我的私密问题：工资条在哪里看"


def settings_for(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, **extra: object
) -> Settings:
    values: dict[str, object] = {
        "force_mock_openai": False,
        "openai_api_key": KEY,
        "openai_api_base": f"{fake_openai.url}/v1",
        "openai_model": "qwen2.5",
        "openai_max_retries": 0,
        "openai_timeout": 2,
    }
    return make_settings(**{**values, **extra})


def test_reply_is_the_model_servers_text(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_openai.script.append(Scripted(text="## 结论\n- 服务器给出的回答"))
    with serve(settings_for(make_settings, fake_openai)) as app:
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "问个问题")), signed_headers(SECRET))
        [request] = fake_dingtalk.wait_for(1)
    assert request.json() == {
        "msgtype": "markdown",
        "markdown": {"title": "结论", "text": "## 结论\n- 服务器给出的回答"},
        "at": {"isAtAll": False},
    }
    assert fake_openai.chats()[0].json()["model"] == "qwen2.5"


@pytest.mark.parametrize(
    ("scripted", "expected"),
    [
        (Scripted(status=401), "抱歉，模型服务拒绝了认证"),
        (Scripted(status=404), "抱歉，配置的模型不存在"),
        (Scripted(status=429), "模型服务现在太忙了"),
        (Scripted(status=500), "模型服务暂时不可用"),
        (None, "抱歉，模型服务响应超时"),  # no answer within OPENAI_TIMEOUT
    ],
)
def test_model_failures_reach_the_person_and_the_server_stays_healthy(
    make_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    fake_dingtalk: FakeDingTalk,
    scripted: Scripted | None,
    expected: str,
) -> None:
    if scripted is None:  # the model answers only when the test ends: OPENAI_TIMEOUT is what ends the wait
        scripted = Scripted(hold=threading.Event())
    fake_openai.script.extend([scripted, Scripted(text="恢复正常")])
    with serve(settings_for(make_settings, fake_openai, openai_timeout=3)) as app:
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "第一问")), signed_headers(SECRET))
        fake_dingtalk.wait_for(1)
        assert app.client.get("/healthz").status_code == 200
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "第二问")), signed_headers(SECRET))
        fake_dingtalk.wait_for(2)
    first, second = (r["text"]["content"] for r in fake_dingtalk.replies())
    assert first.startswith(expected)
    assert second == "恢复正常"


def test_no_secret_webhook_or_text_in_logs_at_info(
    make_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    fake_dingtalk: FakeDingTalk,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "outgoing-token-abc123"
    fake_openai.script.extend([Scripted(text="第一条回答"), Scripted(status=401), Scripted(status=500)])
    fake_dingtalk.errcodes.extend([0, 0, 310000])
    webhook = fake_dingtalk.webhook(WEBHOOK_SESSION)
    good = signed_headers(SECRET)
    with serve(settings_for(make_settings, fake_openai, dingtalk_outgoing_token=token)) as app:
        app.post_callback(encode(callback(webhook, PRIVATE_TEXT)), good)
        app.post_callback(encode(callback(webhook, PRIVATE_TEXT + "2", group=True)), good)
        app.post_callback(encode(callback(webhook, PRIVATE_TEXT + "3")), {"token": token})
        fake_dingtalk.wait_for(3)
        app.post_callback(encode(callback(webhook, PRIVATE_TEXT)), signed_headers("wrong"))
        app.post_callback(encode(callback(webhook, PRIVATE_TEXT)), {"token": "wrong-token"})
        app.post_callback(b'{"text": "' + PRIVATE_TEXT.encode() + b'"}', good)
    # (leaving serve() drains what is still under way: every log line is in by now)
    secrets = [
        KEY,
        SECRET,
        token,
        WEBHOOK_SESSION,
        webhook,
        fake_dingtalk.url + "/robot",
        PRIVATE_TEXT,
        good["sign"],
    ]
    formatter = logging.Formatter()  # the whole record: message and any traceback
    loud = [formatter.format(r) for r in caplog.records if r.levelno >= logging.INFO]
    assert len(loud) > 8  # the scenario did log: callbacks, failures, errcode 310000
    for line in loud:
        for secret in secrets:
            assert secret not in line, f"{secret!r} leaked at INFO+: {line}"
    quiet = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(PRIVATE_TEXT in line for line in quiet)  # text is available at DEBUG, as documented


def test_reply_is_sent_before_a_slow_memory_extraction_finishes(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    # The first chat call answers the person; the second is the fact extraction, which gets no answer
    # until the reply has arrived. Neither the model nor the memory write times out before the waits
    # below give up: a reply that waited for the extraction would never come.
    extraction = threading.Event()
    fake_openai.script.extend(
        [Scripted(text="好的，记住了"), Scripted(text='{"facts": ["用户喜欢猫"]}', hold=extraction)]
    )
    patient = {"openai_timeout": 2 * PATIENCE, "memory_timeout": 2 * PATIENCE}
    with serve(settings_for(make_settings, fake_openai, **patient)) as app:
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "我喜欢猫")), signed_headers(SECRET))
        [reply] = fake_dingtalk.wait_for(1)
        fake_openai.wait_for(2, path="/chat/completions")  # the extraction is under way
        health = app.client.get("/healthz").json()
        assert (health["memory"], health["memory_writes"]) == ("ok", 1)  # and not answered yet
        extraction.set()
    assert reply.json()["text"]["content"] == "好的，记住了"
    # the real-mode embeddings came from the same endpoint (the seed's behaviour)
    assert any(r.path == "/v1/embeddings" for r in fake_openai.requests)


def test_an_endpoint_without_embeddings_runs_without_long_term_memory(
    make_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    fake_dingtalk: FakeDingTalk,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai.embeddings = False  # like many vLLM/Ollama setups: /v1/embeddings answers 404
    fake_openai.script.append(Scripted(text="照常回答"))
    with serve(settings_for(make_settings, fake_openai)) as app:
        assert app.client.get("/healthz").json()["memory"] == "off"
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "我喜欢猫")), signed_headers(SECRET))
        [reply] = fake_dingtalk.wait_for(1)
    assert reply.json()["text"]["content"] == "照常回答"
    assert "long-term memory is OFF" in caplog.text
    assert "EMBEDDING_PROVIDER=local" in caplog.text
    assert KEY not in caplog.text


def test_real_mode_learns_with_the_endpoint_and_recalls_in_another_conversation(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    # answer, extraction (the same chat model), then the answer in the second conversation
    fake_openai.script.extend(
        [Scripted(text="记住了"), Scripted(text='{"facts": ["用户对花生过敏"]}'), Scripted(text="别吃花生")]
    )
    with serve(settings_for(make_settings, fake_openai)) as app:
        first = callback(fake_dingtalk.webhook(), "我对花生过敏")
        app.post_callback(encode(first), signed_headers(SECRET))
        fake_openai.wait_for(2, path="/chat/completions")  # the extraction call

        def settled() -> bool:  # the reply is out and the background write is done
            health = app.client.get("/healthz").json()
            return not health["in_flight"] and not health["memory_writes"]

        wait_until(settled, what="the reply and the memory write done", every=0.05)
        second = callback(fake_dingtalk.webhook(), "我能吃什么零食？", conversationId="cid-another==")
        app.post_callback(encode(second), signed_headers(SECRET))
        fake_dingtalk.wait_for(2)
    extraction, answer = fake_openai.chats()[1].json(), fake_openai.chats()[2].json()
    assert "提取" in extraction["messages"][0]["content"]  # prompts/memory.yaml went to the same model
    system = answer["messages"][0]["content"]
    assert "<memories>\n- 用户对花生过敏\n</memories>" in system
    assert any(r.path == "/v1/embeddings" for r in fake_openai.requests)
