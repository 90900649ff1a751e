"""The console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium) against the real
app. Logging in, the lockout, a conversation counted and its transcript hidden or shown (escaped), a person
erased, a prompt edit refused and then used, the playground against the recorded request, the cases, a form
without its CSRF token, and a 390-pixel phone. Every page is saved as a screenshot under test-artifacts/.

Locally the tests skip with one line when Chromium or Playwright is missing; in CI (CI=true) they fail."""

from __future__ import annotations

import html
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.settings.config import DEFAULT_PROMPTS_DIR, Settings
from tests.conftest import ROOT, SECRET, RunningApp, serve
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.test_console_security import PASSWORD
from tests.test_memory_commands import files_containing
from tests.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("DINGBOT_ARTIFACTS", ROOT / "test-artifacts")) / "console"
# Nothing but loopback: every other name resolves to nothing, and Chromium's own traffic is off.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
XSS = "<script>alert(1)</script>我对花生过敏"


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests must run in CI: {why} (.ci/run installs Debian's chromium)")
    pytest.skip(f"{why}: `apt-get install chromium` (Debian) to run the console's browser tests")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.is_file():
        _missing(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Console:
    """One browser page on one running app, with what the tests need of it."""

    def __init__(self, browser: Any, app: RunningApp, name: str, *, width: int = 1280) -> None:
        self.app = app
        self.name = name
        self.context = browser.new_context(viewport={"width": width, "height": 900}, base_url=app.url)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []  # an alert() would land here: script in what people wrote ran
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def open(self, path: str) -> Any:
        response = self.page.goto(path)
        self.shot(path.strip("/").replace("/", "-").split("?")[0] or "console")
        return response

    def shot(self, label: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{label}.png"), full_page=True)

    def log_in(self, password: str = PASSWORD) -> None:
        self.page.goto("/console/login")
        self.page.fill("input[name=password]", password)
        self.page.click("button[type=submit]")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def console(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Console]]:
    opened: list[Console] = []
    name = re.sub(r"\W+", "-", request.node.name).strip("-")

    def make(app: RunningApp, **options: Any) -> Console:
        made = Console(browser, app, f"{name}-{len(opened)}", **options)
        opened.append(made)
        return made

    yield make
    for made in opened:
        made.close()


def _talk(app: RunningApp, fake_dingtalk: FakeDingTalk, text: str, replies: int) -> None:
    app.post_callback(encode(callback(fake_dingtalk.webhook(), text)), signed_headers(SECRET))
    fake_dingtalk.wait_for(replies)


def test_log_in_wrong_password_and_the_lockout(
    make_settings: Callable[..., Settings], console: Callable[..., Console]
) -> None:
    with serve(make_settings(console_password=PASSWORD)) as app:
        browser = console(app)
        browser.log_in("not the password")
        wrong = browser.page.inner_text("main")
        browser.shot("login-wrong")
        for _ in range(5):
            browser.log_in("still not it")
        locked = browser.page.inner_text("main")
        browser.shot("login-locked")
        browser.log_in()  # the right one, but locked out now
        still_locked = browser.page.url
        other = console(app)  # a second browser from the same address is locked out too
        other.log_in()
        assert other.page.url.endswith("/console/login")
    assert "Wrong password" in wrong
    assert "Too many failed logins" in locked
    assert still_locked.endswith("/console/login")


def test_a_conversation_is_counted_and_its_transcript_hidden_or_shown_as_text(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, console: Callable[..., Console]
) -> None:
    texts = {}
    for show, replies in ((False, 1), (True, 2)):  # the second service reads the same database
        settings = make_settings(console_password=PASSWORD, console_show_text=show)
        with serve(settings) as app:
            _talk(app, fake_dingtalk, XSS, replies)
            browser = console(app)
            browser.log_in()
            wait_until(lambda b=browser, n=replies: _counted(b, n), what="the overview counting the messages")
            wait_until(
                lambda b=browser, n=replies: _listed(b, n), what="the conversation listed with its turns"
            )
            browser.page.click("table a")
            browser.shot(f"transcript-{'shown' if show else 'hidden'}")
            texts[show] = browser.page.inner_text("main")
            assert browser.dialogs == []  # nothing people wrote ran as script
    assert "CONSOLE_SHOW_TEXT=true" in texts[False]
    assert "花生" not in texts[False]
    assert XSS in texts[True]  # shown, as the text it is


def _counted(browser: Console, messages: int) -> bool:
    browser.open("/console")
    return bool(browser.page.inner_text("#received") == str(messages))


def _listed(browser: Console, turns: int) -> bool:
    browser.open("/console/conversations")
    return f"\t{turns}\t" in browser.page.inner_text("table")


def test_erasing_a_person_leaves_nothing_of_them(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, console: Callable[..., Console]
) -> None:
    settings = make_settings(console_password=PASSWORD, console_show_text=True)
    with serve(settings) as app:
        _talk(app, fake_dingtalk, "我叫王小明，我对花生过敏", 1)
        browser = console(app)
        browser.log_in()

        def found() -> bool:
            browser.open("/console/people?q=042217")
            return browser.page.locator("table a").count() > 0

        wait_until(found, what="the person found")
        browser.page.click("table a")
        wait_until(
            lambda: "用户对花生过敏" in (browser.page.reload(), browser.page.inner_text("main"))[1],
            what="the memory learned",
        )
        browser.shot("person")
        browser.page.click("form[action='/console/people/forget'] button")
        erased = browser.page.inner_text("main")
        browser.shot("person-erased")
    assert "Everything about this person was erased" in erased
    assert files_containing(settings.database_path.parent, ["花生"]) == {}


def test_a_broken_prompt_is_refused_and_a_good_one_answers_the_next_message(
    make_settings: Callable[..., Settings],
    fake_dingtalk: FakeDingTalk,
    console: Callable[..., Console],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "prompts"
    shutil.copytree(DEFAULT_PROMPTS_DIR, folder)
    settings = make_settings(console_password=PASSWORD, prompts_dir=folder)
    original = (folder / "replies.yaml").read_text(encoding="utf-8")
    with serve(settings) as app:
        browser = console(app)
        browser.log_in()
        browser.open("/console/prompts")
        browser.page.click("text=replies.yaml")
        editor = browser.page.locator("textarea[name=text]")
        editor.fill(original.replace("你说的是：「{text}」", "你说的是：「{txet}」"))
        browser.page.click("form[action='/console/prompts/edit'] button")
        refused = browser.page.inner_text("#error")
        browser.shot("prompt-refused")
        unchanged = (folder / "replies.yaml").read_text(encoding="utf-8")
        browser.page.locator("textarea[name=text]").fill(
            original.replace("【模拟回复】", "【模拟回复·青鸟】")
        )
        browser.page.click("form[action='/console/prompts/edit'] button")
        saved = browser.page.inner_text("#saved")
        _talk(app, fake_dingtalk, "你好", 1)
    assert "txet" in refused  # the loader's own words
    assert unchanged == original
    assert "replies.yaml" in saved
    assert "【模拟回复·青鸟】" in fake_dingtalk.replies()[0]["text"]["content"]


def test_the_playground_renders_the_request_the_service_sent_and_the_cases_run(
    real_settings: Callable[..., Settings],
    fake_openai: FakeOpenAI,
    fake_dingtalk: FakeDingTalk,
    console: Callable[..., Console],
) -> None:
    settings = real_settings(console_password=PASSWORD, embedding_provider="local")
    with serve(settings) as app:
        _talk(app, fake_dingtalk, "周报怎么写？", 1)
        sent = fake_openai.chats()[0].json()["messages"]
        browser = console(app)
        browser.log_in()
        browser.open("/console/prompts/playground")
        browser.page.fill("textarea[name=message]", "周报怎么写？")
        browser.page.click("form[action='/console/prompts/playground'] button")
        rendered = browser.page.inner_text("#prompt")
        browser.shot("playground")
        browser.open("/console/prompts")
        browser.page.click("form[action='/console/prompts/cases'] button")
        summary = browser.page.inner_text("#summary")
        browser.shot("cases")
    roles = {"system": "system", "user": "human", "assistant": "ai"}
    expected = "\n".join(f"--- {roles[m['role']]} ---\n{m['content']}" for m in sent)
    now = re.compile(r"当前时间：[^\n]*")
    assert now.sub("", rendered.strip()) == now.sub("", expected.strip())
    passed, total = (int(n) for n in re.findall(r"\d+", summary)[:2])
    assert passed == total
    assert total >= 5


def test_a_form_without_its_csrf_token_is_refused(
    make_settings: Callable[..., Settings], console: Callable[..., Console]
) -> None:
    with serve(make_settings(console_password=PASSWORD)) as app:
        browser = console(app)
        browser.log_in()
        browser.open("/console/people?q=x")
        browser.page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
        with browser.page.expect_response(lambda r: r.url.endswith("/console/logout")) as answer:
            browser.page.click("form[action='/console/logout'] button")
        assert answer.value.status == 403
        assert "CSRF" in html.unescape(browser.page.content())
        browser.open("/console")
        assert browser.page.url.endswith("/console")  # still signed in: the forged post changed nothing


def test_a_390_pixel_phone_can_use_every_page(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, console: Callable[..., Console]
) -> None:
    with serve(make_settings(console_password=PASSWORD, console_show_text=True)) as app:
        _talk(app, fake_dingtalk, "手机上看得清吗？" * 10, 1)
        phone = console(app, width=390)
        phone.log_in()
        for path in (
            "/console",
            "/console/conversations",
            "/console/people?q=0",
            "/console/prompts",
            "/console/prompts/playground",
            "/console/deliveries",
            "/console/reminders",
            "/console/settings",
            "/console/audit",
        ):
            phone.open(path)
            wide = phone.page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, f"{path} is {wide} px wide on a 390-px phone"
            box = phone.page.locator("header nav a").first.bounding_box()
            assert box is not None, f"{path}: no menu"
            assert box["x"] + box["width"] <= 390, f"{path}: the menu is off the screen"
