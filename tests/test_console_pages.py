"""The console's conversations and people pages on the real app: what an operator sees (metadata, and text
only with CONSOLE_SHOW_TEXT), what people wrote rendered as text, and erasing a person for good."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from agent.settings.config import Settings
from tests.conftest import SECRET, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.test_console_security import PASSWORD, csrf_of, log_in
from tests.test_memory_commands import files_containing
from tests.waiting import wait_until

XSS = "<script>alert(1)</script>我对花生过敏"


def _talk(app: object, fake_dingtalk: FakeDingTalk, text: str, n: int) -> None:
    body = callback(fake_dingtalk.webhook(), text)
    app.post_callback(encode(body), signed_headers(SECRET))  # type: ignore[attr-defined]
    fake_dingtalk.wait_for(n)


def test_transcripts_show_metadata_unless_text_is_allowed(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    pages = {}
    for turns, show in ((1, False), (2, True)):  # the second service reads the same database: both turns
        fake_dingtalk.requests.clear()
        settings = make_settings(console_password=PASSWORD, console_show_text=show)
        with serve(settings) as app:
            _talk(app, fake_dingtalk, XSS, 1)
            assert log_in(app.client).status_code == 303
            # the turn is kept just after the reply is sent: wait for it, not for the send
            wait_until(
                lambda n=turns: f"<td>{n}</td>" in app.client.get("/console/conversations").text,
                what="the conversation listed with its turns",
            )
            listing = app.client.get("/console/conversations")
            link = re.search(r'href="(/console/conversations/view\?scope=[^"]+)"', listing.text)
            assert link, "the conversation is not listed"
            pages[show] = (listing.text, app.client.get(link.group(1).replace("&amp;", "&")).text)
    hidden, shown = pages[False][1], pages[True][1]
    assert "CONSOLE_SHOW_TEXT=true" in hidden  # the page says why the text is not there
    assert "花生" not in hidden
    assert "已隐藏" in hidden
    assert "&lt;script&gt;alert(1)&lt;/script&gt;我对花生过敏" in shown  # shown, as text
    assert "<script>alert(1)</script>" not in shown
    assert "<td>2</td>" in pages[True][0]


def test_erasing_a_person_leaves_nothing_of_them_in_any_store(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, tmp_path: object
) -> None:
    settings = make_settings(console_password=PASSWORD, console_show_text=True)
    with serve(settings) as app:
        person, view = _person_who_told(app, fake_dingtalk)
        assert "单聊" in view.text
        before = files_containing(settings.database_path.parent, ["花生"])
        refused = app.client.post("/console/people/forget", data={"person": "x"})
        erased = app.client.post(
            "/console/people/forget",
            data={"person": person, "csrf": csrf_of(view)},
            follow_redirects=True,
        )
        audit = app.client.get("/console/audit").text
    after = files_containing(settings.database_path.parent, ["花生"])
    assert before, "nothing was stored: the check below would prove nothing"
    assert refused.status_code == 403
    assert 'id="done"' in erased.text
    assert "（暂无）" in erased.text
    assert after == {}
    assert re.search(r"<td>forget_person</td><td>[^<]+</td>", audit)


def _person_who_told(app: Any, fake_dingtalk: FakeDingTalk) -> tuple[str, Any]:
    """A person says their name and an allergy; the console finds them by part of their staff id and shows
    their page once the allergy is learned: (their id, that page)."""
    _talk(app, fake_dingtalk, "我叫王小明，我对花生过敏", 1)
    assert log_in(app.client).status_code == 303
    people = "/console/people?q=042217"  # part of the callback's staff id
    wait_until(lambda: "/console/people/view?person=" in app.client.get(people).text, what="the person")
    found = re.search(r'/console/people/view\?person=([^"]+)"', app.client.get(people).text)
    assert found, "nobody found"
    page = f"/console/people/view?person={found.group(1)}"
    wait_until(lambda: "用户对花生过敏" in app.client.get(page).text, what="the memory learned")
    return _unquote(found.group(1)), app.client.get(page)


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


def test_the_pages_need_a_login(make_settings: Callable[..., Settings]) -> None:
    with serve(make_settings(console_password=PASSWORD)) as app:
        for path in (
            "/console/conversations",
            "/console/people",
            f"/console/people/view?person={quote('a:b')}",
            "/console/prompts",
            "/console/prompts/playground",
            "/console/deliveries",
            "/console/reminders",
            "/console/settings",
        ):
            assert app.client.get(path).status_code == 303, path
        for path in (  # and no change without one, token or not
            "/console/people/forget",
            "/console/people/forget-one",
            "/console/prompts/edit",
            "/console/prompts/playground",
            "/console/prompts/cases",
            "/console/deliveries/retry",
            "/console/reminders/cancel",
            "/console/settings/doctor",
        ):
            assert app.client.post(path, data={"csrf": "x"}).status_code == 303, path


def test_one_memory_is_erased_and_the_others_stay(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    settings = make_settings(console_password=PASSWORD, console_show_text=True)
    with serve(settings) as app:
        person, view = _person_who_told(app, fake_dingtalk)
        rows = re.findall(r'<td class="text">([^<]+)</td>.*?name="memory" value="([^"]+)"', view.text, re.S)
        peanut = next(memory for text, memory in rows if "花生" in text)
        form = {"person": person, "memory": peanut, "csrf": csrf_of(view)}
        erased = app.client.post("/console/people/forget-one", data=form, follow_redirects=True)
        again = app.client.post("/console/people/forget-one", data=form)
        other = app.client.post("/console/people/forget-one", data={**form, "person": "corp:someone-else"})
        audit = app.client.get("/console/audit").text
    assert len(rows) >= 2, rows  # 王小明 and 花生: one is erased, the other stays
    assert "花生" not in erased.text
    assert "王小明" in erased.text
    assert again.status_code == 409  # gone already
    assert other.status_code == 409  # never another person's
    assert files_containing(settings.memory_folder, ["花生"]) == {}  # the memory store keeps no copy
    assert "forget_memory" in audit
