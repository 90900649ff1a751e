"""The console's operator pages on the real app: deliveries that were given up (with what DingTalk's errcode
means, never their text or address) retried and audited."""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import SecretStr

from agent.settings.config import Settings
from api.console.diagnostics import shown
from tests.conftest import OPENAI_KEY, SECRET, app_credentials, serve
from tests.fakes.openai_server import FakeOpenAI, Scripted
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.store import sql
from tests.test_console_security import PASSWORD, csrf_of, log_in
from tests.waiting import wait_until


def _states(settings: Settings) -> list[str]:
    return [str(row[0]) for row in sql(settings, "SELECT state FROM outbox ORDER BY id")]


def test_a_given_up_reply_is_shown_with_its_meaning_and_retried(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.errcodes.append(400013)  # the robot was out of the group: given up, not retried
    settings = make_settings(console_password=PASSWORD)
    with serve(settings) as app:
        body = callback(fake_dingtalk.webhook("secret-session-abc"), "周五的会改到几点？")
        assert app.post_callback(encode(body), signed_headers(SECRET)).status_code == 200
        wait_until(lambda: _states(settings) == ["failed"], what="the reply given up")
        assert log_in(app.client).status_code == 303
        listing = app.client.get("/console/deliveries")
        row = re.search(r'name="row" value="(\d+)"', listing.text)
        assert row, "no retry button for the given-up reply"
        refused = app.client.post("/console/deliveries/retry", data={"row": row.group(1)})
        retried = app.client.post(
            "/console/deliveries/retry", data={"row": row.group(1), "csrf": csrf_of(listing)}
        )
        fake_dingtalk.wait_for(2)  # sent again, now (not at the next check)
        wait_until(lambda: _states(settings) == ["sent"], what="the retried reply marked sent")
        again = app.client.post(
            "/console/deliveries/retry", data={"row": row.group(1), "csrf": csrf_of(listing)}
        )
        after = app.client.get("/console/deliveries").text
        audit = app.client.get("/console/audit").text
    assert "errcode 400013" in listing.text
    assert "the robot is not in this conversation any more" in listing.text  # what the errcode means
    assert "secret-session-abc" not in listing.text  # the session webhook is a credential
    assert "周五" not in listing.text  # neither what they wrote nor the reply (which quotes it)
    assert refused.status_code == 403
    assert retried.status_code == 303
    assert again.status_code == 409  # sent: nothing left to retry
    assert "Everything was sent" in after
    assert "reply_retried" in audit


def test_the_settings_page_shows_no_secret_and_runs_the_doctor(
    real_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    secrets = {
        "access_token": "robot-access-token-0123456789abcdef",
        "dingtalk_client_secret": "app-secret-value",
    }
    settings = real_settings(
        console_password=PASSWORD, embedding_provider="local", **{**app_credentials(fake_dingtalk), **secrets}
    )
    with serve(settings) as app:
        assert log_in(app.client).status_code == 303
        shown = app.client.get("/console/settings")
        refused = app.client.post("/console/settings/doctor", data={})
        ran = app.client.post("/console/settings/doctor", data={"csrf": csrf_of(shown)})
    everything = [
        OPENAI_KEY,
        SECRET,
        PASSWORD,
        *secrets.values(),
    ]
    for page in (shown.text, ran.text):
        leaked = [v for v in everything if v in page or (len(v) >= 20 and v[-8:] in page)]  # no tail either
        assert leaked == []
    assert "<code>OPENAI_API_KEY</code>" in shown.text
    assert "已设置 · set" in shown.text
    assert refused.status_code == 403
    assert ran.status_code == 200
    assert 'id="doctor"' in ran.text
    for passed in (
        "端点接受该密钥",
        "应用凭证可获取",
    ):  # the key on the local OpenAI server; the app's on DingTalk's
        assert re.search(rf'<tr class="ok">\s*<td>✓</td>\s*<td>[^<]*{passed}', ran.text), passed


def test_an_address_is_shown_without_its_user_or_query() -> None:
    assert shown("https://bot:pw@example.com/v1?token=abc#x") == "https://example.com/v1"
    assert shown(SecretStr("sk-0123456789abcdef")) == "已设置 · set"
    assert shown(["10.0.0.0/8", "127.0.0.1"]) == "10.0.0.0/8, 127.0.0.1"


def test_the_overview_draws_the_hour_and_counts_errors_by_class(
    real_settings: Callable[..., Settings], fake_openai: FakeOpenAI, fake_dingtalk: FakeDingTalk
) -> None:
    fake_openai.script.append(Scripted(status=401, error_code="invalid_api_key"))  # the first answer
    settings = real_settings(console_password=PASSWORD, embedding_provider="local")
    with serve(settings) as app:
        for n, text in enumerate(["第一条", "第二条"], 1):
            body = callback(fake_dingtalk.webhook(), text, msgId=f"overview-{n}")
            assert app.post_callback(encode(body), signed_headers(SECRET)).status_code == 200
            fake_dingtalk.wait_for(n)
        assert log_in(app.client).status_code == 303
        wait_until(lambda: _states(settings) == ["sent", "sent"], what="both replies marked sent")
        overview = app.client.get("/console").text
    bars = [int(n) for n in re.findall(r"<title>\d\d:00: (\d+)</title>", overview)]
    assert len(bars) == 24
    assert sum(bars) == 2  # the two messages, in the hour (or two, at an hour's turn) they came
    assert re.search(r'<dd id="replies">2</dd>', overview)
    latency = re.search(r'<figure id="chart-latency">(.*?)</figure>', overview, re.S)
    assert latency, "no latency chart"
    assert latency.group(1).count("<circle") in (3, 6)  # p50, p95 and p99 of the hour's replies
    errors = re.search(r'<table id="errors">(.*?)</table>', overview, re.S)
    assert errors, "no errors table"
    assert "authentication" in errors.group(1)  # the refused key, by its class
    assert "<script" not in overview  # drawn on the server: no script at all


def test_a_reminder_is_listed_without_its_text_and_cancelled(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    settings = make_settings(console_password=PASSWORD)
    with serve(settings) as app:
        body = callback(fake_dingtalk.webhook(), "3分钟后提醒我喝水")
        assert app.post_callback(encode(body), signed_headers(SECRET)).status_code == 200
        fake_dingtalk.wait_for(1)
        assert log_in(app.client).status_code == 303
        listing = app.client.get("/console/reminders")
        found = re.search(r'name="reminder" value="(\d+)"', listing.text)
        assert found, "the reminder is not listed"
        form = {"reminder": found.group(1), "csrf": csrf_of(listing)}
        refused = app.client.post("/console/reminders/cancel", data={"reminder": found.group(1)})
        cancelled = app.client.post("/console/reminders/cancel", data=form)
        again = app.client.post("/console/reminders/cancel", data=form)
        after = app.client.get("/console/reminders").text
        audit = app.client.get("/console/audit").text
    assert "喝水" not in listing.text  # what people wrote: only with CONSOLE_SHOW_TEXT
    assert "已隐藏" in listing.text
    assert refused.status_code == 403
    assert cancelled.status_code == 303
    assert again.status_code == 409
    assert sql(settings, "SELECT state FROM reminders") == [("cancelled",)]
    assert "none pending" in after
    assert "reminder_cancelled" in audit
