"""Against a model that behaves like a small one on llama.cpp (tests/fakes/weak_model.py): answers are
bounded, a cut answer says so, and the doctor's one-token check really is one token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.settings.config import Settings
from dingbot.cli import main
from tests.conftest import SECRET, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.fakes.weak_model import RUNAWAY, WeakModel
from tests.prometheus import sample
from tests.store import sql
from tests.waiting import wait_until

TRUNCATED = "（回答过长，已截断）"


@pytest.fixture
def weak() -> Iterator[WeakModel]:
    server = WeakModel().start()
    yield server  # type: ignore[misc]
    server.stop()


def on_weak(make_settings: Callable[..., Settings], weak: WeakModel, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "force_mock_openai": False,
        "openai_api_key": "local",
        "openai_api_base": f"{weak.url}/v1",
        "openai_model": weak.model,
        "openai_max_retries": 0,
    }
    return make_settings(**(values | overrides))


def ask(app: Any, dingtalk: FakeDingTalk, text: str, replies: int) -> str:
    app.post_callback(encode(callback(dingtalk.webhook(), text)), signed_headers(SECRET))
    dingtalk.wait_for(replies, path="/robot/sendBySession")
    return str(dingtalk.replies()[replies - 1]["text"]["content"])


def test_a_model_that_never_stops_is_cut_at_max_tokens_and_the_person_is_told(
    make_settings: Callable[..., Settings], weak: WeakModel, fake_dingtalk: FakeDingTalk
) -> None:
    with serve(on_weak(make_settings, weak, max_tokens=60)) as app:
        text = ask(app, fake_dingtalk, "讲个故事", 1)
        metrics = app.client.get("/metrics").text
    [request] = weak.answers()
    assert request["max_tokens"] == 60  # the name llama.cpp reads; without it the model runs on
    assert request["max_completion_tokens"] == 60  # the name OpenAI's own API reads
    body, note = text.rsplit("\n\n", 1)
    assert body == (RUNAWAY * 10)[:60]
    assert note == TRUNCATED
    assert sample(metrics, "dingbot_answers_truncated_total") == 1


def test_an_answer_that_ends_by_itself_has_no_note(
    make_settings: Callable[..., Settings], weak: WeakModel, fake_dingtalk: FakeDingTalk
) -> None:
    weak.answer = "好的，没问题。"
    with serve(on_weak(make_settings, weak)) as app:
        assert ask(app, fake_dingtalk, "你好", 1) == "好的，没问题。"


def test_openai_itself_gets_only_the_name_it_expects(make_settings: Callable[..., Settings]) -> None:
    from agent.model.factory import build_chat_model

    settings = make_settings(force_mock_openai=False, openai_api_key="sk-x", max_tokens=77)
    model = build_chat_model(settings, mock_reply_template="")
    payload = model._get_request_payload([("human", "hi")])  # type: ignore[attr-defined]
    assert payload["max_completion_tokens"] == 77
    assert "max_tokens" not in payload
    assert "max_tokens" not in (payload.get("extra_body") or {})


def test_the_doctors_one_token_check_is_one_token_on_servers_that_ignore_the_new_name(
    weak: WeakModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "OPENAI_API_KEY": "local",
        "OPENAI_API_BASE": f"{weak.url}/v1",
        "OPENAI_MODEL": weak.model,
        "DATABASE_PATH": str(tmp_path / "bot.db"),
        "EMBEDDING_PROVIDER": "local",
    }.items():
        monkeypatch.setenv(name, value)
    main(["doctor", "--json"])
    capsys.readouterr()
    [request] = weak.answers()
    assert request["max_tokens"] == 1


def test_thirty_long_answers_in_a_row_never_make_the_next_message_too_long(
    make_settings: Callable[..., Settings], weak: WeakModel, fake_dingtalk: FakeDingTalk
) -> None:
    """Thirty turns of 300-token answers are several times what a 2,000-token context holds: the history sent
    is fitted to the context the server told (llama.cpp's /props), so no message is refused."""
    weak.n_ctx = 2000
    # the model's context, not our token budget, is what is tested: the budget and the summary are off
    budget_off = {"history_tokens": 0, "prompt_token_budget": 0, "summary_tokens": 0}
    with serve(on_weak(make_settings, weak, max_tokens=300, rate_limit_per_minute=0, **budget_off)) as app:
        weak.wait_for(1, path="/props")
        replies = [ask(app, fake_dingtalk, f"第{n}个问题：请详细说说", n) for n in range(1, 31)]
    assert weak.context_refusals == 0
    assert all(reply.endswith(TRUNCATED) for reply in replies)  # every one answered, cut at MAX_TOKENS
    sent = weak.answers()[-1]["messages"]
    assert len(sent) > 2  # history was kept, as much as fits
    assert sum(len(str(m["content"])) for m in sent) + 300 <= 2000


def test_a_context_learned_from_a_refusal_fits_every_later_message(
    make_settings: Callable[..., Settings], weak: WeakModel, fake_dingtalk: FakeDingTalk
) -> None:
    """A server that tells nothing (not llama.cpp, not vLLM) and is smaller than the assumed 8,192
    tokens: its first refusal states the limit, the message is retried shorter, and it is believed."""
    weak.n_ctx, weak.tell_context = 2000, ""
    with serve(on_weak(make_settings, weak, max_tokens=300)) as app:
        replies = [ask(app, fake_dingtalk, f"第{n}个问题：请详细说说", n) for n in range(1, 16)]
    assert weak.context_refusals == 1
    assert all(reply.endswith(TRUNCATED) for reply in replies)


def test_a_message_too_long_for_the_model_on_its_own_suggests_reset(
    make_settings: Callable[..., Settings], weak: WeakModel, fake_dingtalk: FakeDingTalk
) -> None:
    weak.n_ctx, weak.tell_context = 1200, ""
    with serve(on_weak(make_settings, weak, max_tokens=300, max_message_chars=4000)) as app:
        text = ask(app, fake_dingtalk, "长" * 1500, 1)
    assert "超出了模型一次能读的长度" in text
    assert "/reset" in text
    assert weak.context_refusals == 2  # the message, then once more without history: no more


def test_a_timeout_is_not_retried_and_the_request_is_dropped(
    make_settings: Callable[..., Settings], weak: WeakModel, fake_dingtalk: FakeDingTalk
) -> None:
    """A slow model past OPENAI_TIMEOUT: the person is told, the connection is closed (the server sees the
    client leave), and no second request doubles the server's load."""
    weak.token_seconds = 0.003  # 600 tokens: about 2 s, past the 0.5 s timeout
    settings = on_weak(make_settings, weak, max_tokens=600, openai_timeout=0.5, openai_max_retries=2)
    with serve(settings) as app:
        text = ask(app, fake_dingtalk, "讲个故事", 1)
        wait_until(lambda: weak.abandoned == 1, what="the server to find its client gone")
    assert text == "抱歉，模型服务响应超时，请稍后再试一次。"
    assert len(weak.answers()) == 1


def settle(app: Any, weak: WeakModel, extractions: int = 1) -> None:
    """The message's facts were asked for and the write is done (the service learns after replying)."""
    wait_until(lambda: len(weak.extractions()) >= extractions, what="the extraction")
    wait_until(lambda: app.client.get("/healthz").json()["memory_writes"] == 0, what="memory writes")


def test_extraction_is_capped_cold_and_asked_for_json(
    make_settings: Callable[..., Settings], weak: WeakModel, fake_dingtalk: FakeDingTalk
) -> None:
    weak.answer, weak.json_extraction, weak.extraction_facts = "好的", True, ["用户喜欢猫"]
    with serve(on_weak(make_settings, weak)) as app:
        ask(app, fake_dingtalk, "我喜欢猫", 1)
        settle(app, weak)
        listed = ask(app, fake_dingtalk, "/memory", 2)
    [extraction] = weak.extractions()
    assert extraction["max_tokens"] == 256  # a model that runs on stops here, not at MAX_TOKENS
    assert extraction["temperature"] == 0
    assert extraction["response_format"] == {"type": "json_object"}
    assert "1. 用户喜欢猫" in listed


def test_an_answer_that_is_not_json_gets_one_repair(
    make_settings: Callable[..., Settings], weak: WeakModel, fake_dingtalk: FakeDingTalk
) -> None:
    weak.answer, weak.extraction_facts = "好的", ["用户对花生过敏", "事实一"]  # prose first, JSON when told
    with serve(on_weak(make_settings, weak)) as app:
        ask(app, fake_dingtalk, "我对花生过敏", 1)
        settle(app, weak, extractions=2)
        listed = ask(app, fake_dingtalk, "/memory", 2)
    _, repair = weak.extractions()
    assert [m["role"] for m in repair["messages"]] == ["system", "user", "assistant", "user"]
    assert repair["messages"][2]["content"] == "好的，我会记住这些信息：用户提到了一些事情。"
    assert "不是有效的 JSON" in repair["messages"][3]["content"]
    assert "1. 用户对花生过敏" in listed
    assert "事实一" not in listed  # the prompt's own example, copied by a weak model, is never kept


def test_a_model_that_never_answers_json_is_logged_and_counted(
    make_settings: Callable[..., Settings],
    weak: WeakModel,
    fake_dingtalk: FakeDingTalk,
    caplog: pytest.LogCaptureFixture,
) -> None:
    weak.answer, weak.json_on_repair = "好的", False
    with serve(on_weak(make_settings, weak)) as app:
        ask(app, fake_dingtalk, "我对花生过敏", 1)
        settle(app, weak, extractions=2)
        metrics = app.client.get("/metrics").text
    assert len(weak.extractions()) == 2  # the first try and one repair, no more
    assert "answered without the JSON the prompt asks for, twice" in caplog.text
    assert sample(metrics, "dingbot_memory_extraction_failures_total", reason="not_json") == 1


def test_forget_beats_a_fact_said_a_moment_earlier_twenty_times_out_of_twenty(
    make_settings: Callable[..., Settings], weak: WeakModel, fake_dingtalk: FakeDingTalk
) -> None:
    """A slow model: the fact's answer is still being written when "/forget all" (sent a moment later, from
    a group, so handled at the same time) erases everything. Neither the fact's turn nor the fact itself
    may be written afterwards."""
    weak.answer, weak.json_extraction, weak.extraction_facts = "好的，我记住了。", True, ["用户对花生过敏"]
    weak.token_seconds = 0.05  # the answer takes 0.4 s, the extraction about a second
    people = [f"0422170{n:05d}" for n in range(20)]
    settings = on_weak(make_settings, weak, rate_limit_per_minute=0, workers=8)
    with serve(settings) as app:
        for staff_id in people:
            fact = callback(fake_dingtalk.webhook(), "我对花生过敏", senderStaffId=staff_id)
            forget = callback(fake_dingtalk.webhook(), "/forget all", group=True, senderStaffId=staff_id)
            forget["createAt"] = fact["createAt"] + 50  # said after the fact, by 50 ms
            app.post_callback(encode(fact), signed_headers(SECRET))
            app.post_callback(encode(forget), signed_headers(SECRET))
        fake_dingtalk.wait_for(40, path="/robot/sendBySession")
        wait_until(lambda: app.client.get("/healthz").json()["memory_writes"] == 0, what="memory writes")
        for staff_id in people:
            listed = ask_as(app, fake_dingtalk, staff_id)
            assert listed.startswith("我还没有记住关于你的事"), (staff_id, listed)
    assert sql(settings, "SELECT COUNT(*) FROM history WHERE content LIKE '%花生%'") == [(0,)]
    assert sql(settings, "SELECT COUNT(*) FROM learning") == [(0,)]


def ask_as(app: Any, dingtalk: FakeDingTalk, staff_id: str) -> str:
    before = len(dingtalk.replies())
    body = callback(dingtalk.webhook(), "/memory", senderStaffId=staff_id)
    app.post_callback(encode(body), signed_headers(SECRET))
    dingtalk.wait_for(before + 1, path="/robot/sendBySession")
    return str(dingtalk.replies()[before]["text"]["content"])
