"""The console's prompts pages on the real app: a broken edit refused with the loader's message and nothing
written, a good one used by the very next callback, the playground rendering the prompt the service sends
(compared with the request the model endpoint recorded), and the regression cases with their diffs."""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx

from agent.settings.config import DEFAULT_PROMPTS_DIR, Settings
from tests.conftest import SECRET, serve
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.test_console_security import PASSWORD, csrf_of, log_in

_ROLES = {"system": "system", "user": "human", "assistant": "ai"}
_NOW_LINE = re.compile(r"当前时间：[^\n]*")


def _prompts_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts"
    shutil.copytree(DEFAULT_PROMPTS_DIR, folder)
    return folder


def _pre(page: httpx.Response, element: str) -> str:
    found = re.search(rf'<pre class="[^"]*" id="{element}">(.*?)</pre>', page.text, re.S)
    assert found, f"the page has no #{element}"
    return html.unescape(found.group(1))


def _save(client: httpx.Client, name: str, text: str, *, csrf: bool = True) -> httpx.Response:
    form = client.get(f"/console/prompts/edit?file={name}")
    data = {"file": name, "text": text.replace("\n", "\r\n")}  # as a browser sends a textarea
    if csrf:
        data["csrf"] = csrf_of(form)
    return client.post("/console/prompts/edit", data=data)


def test_a_broken_edit_is_refused_and_a_good_one_answers_the_next_message(
    real_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    fake_dingtalk: FakeDingTalk,
    tmp_path: Path,
) -> None:
    folder = _prompts_copy(tmp_path)
    settings = real_settings(console_password=PASSWORD, prompts_dir=folder)
    original = (folder / "system.md").read_text(encoding="utf-8")
    with serve(settings) as app:
        assert log_in(app.client).status_code == 303
        listing = app.client.get("/console/prompts")
        assert "system.md" in listing.text
        assert "chat.yaml" in listing.text

        without_token = _save(app.client, "system.md", original + "暗号：青鸟\n", csrf=False)
        broken = _save(app.client, "system.md", original + "{no_such_variable}\n")
        outside = app.client.get("/console/prompts/edit?file=../../pyproject.toml")
        assert without_token.status_code == 403
        assert broken.status_code == 422
        assert "no_such_variable" in _pre(broken, "error")  # the loader's own words
        assert str(folder) in _pre(broken, "error")  # naming the real file, not a scratch copy
        assert outside.status_code == 404
        assert (folder / "system.md").read_text(encoding="utf-8") == original  # nothing written

        saved = _save(app.client, "system.md", original + "暗号：青鸟\n")
        assert saved.status_code == 303
        assert (folder / "system.md").read_text(encoding="utf-8") == original + "暗号：青鸟\n"  # LF kept
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "你好")), signed_headers(SECRET))
        fake_dingtalk.wait_for(1)
        audit = app.client.get("/console/audit").text
    asked = fake_openai.chats()[0].json()["messages"]
    assert "暗号：青鸟" in asked[0]["content"]  # the very next message used the edit
    assert "prompt_saved" in audit
    assert "system.md" in audit


def test_the_playground_renders_the_prompt_the_service_sends(
    real_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    fake_dingtalk: FakeDingTalk,
    tmp_path: Path,
) -> None:
    settings = real_settings(console_password=PASSWORD, bot_name="小钉")
    with serve(settings) as app:
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "周报怎么写？")), signed_headers(SECRET))
        fake_dingtalk.wait_for(1)
        sent = fake_openai.chats()[0].json()["messages"]
        assert log_in(app.client).status_code == 303
        form = app.client.get("/console/prompts/playground")
        rendered = app.client.post(
            "/console/prompts/playground",
            data={"message": "周报怎么写？", "speaker": "张三", "csrf": csrf_of(form)},
        )
        fake_openai.echo = True
        answered = app.client.post(
            "/console/prompts/playground",
            data={"message": "周报怎么写？", "speaker": "张三", "send": "1", "csrf": csrf_of(form)},
        )
        command = app.client.post(
            "/console/prompts/playground", data={"message": "/help", "csrf": csrf_of(form)}
        )
        requests_after = len(fake_dingtalk.requests)
    expected = "\n".join(f"--- {_ROLES[m['role']]} ---\n{m['content']}" for m in sent) + "\n"
    assert _NOW_LINE.sub("", _pre(rendered, "prompt")) == _NOW_LINE.sub("", expected)
    assert _pre(answered, "answer") == "答复：周报怎么写？"  # what the endpoint answered to that prompt
    assert "/memory" in _pre(command, "reply")
    assert 'id="prompt"' not in command.text
    assert requests_after == 1  # the playground sends nothing to DingTalk


def test_the_cases_run_and_a_changed_prompt_shows_its_diff(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    folder = _prompts_copy(tmp_path)
    settings = make_settings(console_password=PASSWORD, prompts_dir=folder)
    with serve(settings) as app:
        assert log_in(app.client).status_code == 303
        listing = app.client.get("/console/prompts")
        passing = app.client.post("/console/prompts/cases", data={"csrf": csrf_of(listing)})
        original = (folder / "system.md").read_text(encoding="utf-8")
        assert _save(app.client, "system.md", original + "暗号：青鸟\n").status_code == 303
        failing = app.client.post("/console/prompts/cases", data={"csrf": csrf_of(listing)})
        refused = app.client.post("/console/prompts/cases", data={})
    total = re.search(r'id="summary">(\d+) / (\d+)', passing.text)
    assert total
    assert total.group(1) == total.group(2)
    assert int(total.group(2)) >= 5
    after = re.search(r'id="summary">(\d+) / (\d+)', failing.text)
    assert after
    assert int(after.group(1)) < int(after.group(2))
    assert "+暗号：青鸟" in html.unescape(failing.text)  # the snapshot's diff, line by line
    assert refused.status_code == 403
