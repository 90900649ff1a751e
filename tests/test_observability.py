"""GET /metrics and GET /readyz on the running app."""

from __future__ import annotations

from collections.abc import Callable

from agent.settings.config import Settings
from tests.conftest import SECRET, serve
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.prometheus import sample
from tests.waiting import wait_until


def test_readyz_and_metrics_count_what_happened(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, fake_openai: FakeOpenAI
) -> None:
    # the answer, the memory extraction after it, then a failing answer
    fake_openai.script.extend([Scripted(text="好"), Scripted(text='{"facts": []}'), Scripted(status=401)])
    fake_dingtalk.errcodes.extend([0, 300001])
    settings = make_settings(
        force_mock_openai=False,
        openai_api_key="sk-test",
        openai_api_base=f"{fake_openai.url}/v1",
        openai_max_retries=0,
    )
    with serve(settings) as app:
        ready = app.client.get("/readyz").json()
        assert ready.pop("model_endpoint")["state"] in ("checking", "ok")  # the startup check runs meanwhile
        assert ready == {"ready": True, "memory": "ok", "embedding_dims": 64}
        first = callback(fake_dingtalk.webhook(), "你好")
        app.post_callback(encode(first), signed_headers(SECRET))
        app.post_callback(encode(first), signed_headers(SECRET))  # duplicate
        app.post_callback(encode(first), signed_headers("wrong"))  # refused
        app.post_callback(b"{}", signed_headers(SECRET))  # bad body
        fake_dingtalk.wait_for(1)
        fake_openai.wait_for(2, path="/chat/completions")
        # the extraction is done before the next message (the script's next answer is that message's)
        wait_until(lambda: not app.client.get("/healthz").json()["memory_writes"], what="the memory write")
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "再问")), signed_headers(SECRET))
        fake_dingtalk.wait_for(2)
        wait_until(lambda: not app.client.get("/healthz").json()["in_flight"], what="nothing in flight")
        text = app.client.get("/metrics").text
        endpoint = app.client.get("/readyz").json()["model_endpoint"]
    assert endpoint["state"] == "failing"  # the 401 of the second answer: no need to wait for a check
    assert endpoint["kind"] == "authentication"
    assert endpoint["source"] == "answer"
    assert "OPENAI_API_KEY" in endpoint["fix"]
    assert sample(text, "dingbot_model_ok") == 0
    assert sample(text, "dingbot_problems_total", key="model") == 1
    assert sample(text, "dingbot_callbacks_total", outcome="accepted") == 2
    assert sample(text, "dingbot_callbacks_total", outcome="duplicate") == 1
    assert sample(text, "dingbot_callbacks_total", outcome="refused_401") == 1
    assert sample(text, "dingbot_callbacks_total", outcome="refused_400") == 1
    assert sample(text, "dingbot_model_seconds_count") == 2
    assert sample(text, "dingbot_model_errors_total", kind="authentication") == 1
    assert sample(text, "dingbot_sends_total", errcode="0", via="session_webhook") == 1
    assert sample(text, "dingbot_sends_total", errcode="300001", via="session_webhook") == 1
    assert sample(text, "dingbot_memory_recall_seconds_count") == 2
    assert "dingbot_messages_in_flight" in text
    # the answer and the extraction, as the endpoint counted them (its `usage`: 1 + 1 each); not the 401
    assert sample(text, "dingbot_llm_tokens_total", kind="prompt", model="gpt-4-turbo") == 2
    assert sample(text, "dingbot_llm_tokens_total", kind="completion", model="gpt-4-turbo") == 2
