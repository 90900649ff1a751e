"""The web console's security rules over plain HTTP, on the real app under uvicorn: off without a password,
the login with its signed session cookie, CSRF on every form, the lockout, the address allowlist, the
security headers, and the audit log. (Browser tests come with the pages that need them.)"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from agent.settings.config import Settings
from api.console.security import MAX_FAILURES
from tests.conftest import SECRET, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.waiting import wait_until

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, "the page has no CSRF token"
    return found.group(1)


def log_in(client: httpx.Client, password: str = PASSWORD) -> httpx.Response:
    form = client.get("/console/login")
    return client.post("/console/login", data={"password": password, "csrf": csrf_of(form)})


def test_the_console_is_off_without_a_password(make_settings: Callable[..., Settings]) -> None:
    with serve(make_settings()) as app:
        assert app.client.get("/console").status_code == 404
        assert app.client.get("/console/login").status_code == 404


def test_login_sets_a_strict_expiring_cookie_and_every_page_has_the_headers(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    with serve(make_settings(console_password=PASSWORD, console_session_hours=2)) as app:
        client = app.client
        assert client.get("/console").status_code == 303  # not signed in: to the login page
        assert client.get("/console").headers["location"] == "/console/login"
        form = client.get("/console/login")
        signed = log_in(client)
        cookie = signed.headers["set-cookie"]
        app.post_callback(encode(callback(fake_dingtalk.webhook(), "你好")), signed_headers(SECRET))
        fake_dingtalk.wait_for(1)
        wait_until(lambda: _received(client) == "1", what="the overview counting the message")
        overview = client.get("/console")
        audit = client.get("/console/audit")
    assert signed.status_code == 303
    assert signed.headers["location"] == "/console"
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/console", "Max-Age=7200"):
        assert attribute.lower() in cookie.lower(), attribute
    for page in (form, overview, audit):
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "<script" not in page.text  # no inline script at all
    assert "mock" in overview.text
    assert re.search(r"<td>127\.0\.0\.1</td><td>login</td>", audit.text)


def _received(client: httpx.Client) -> str:
    found = re.search(r'<dd id="received">(\d+)</dd>', client.get("/console").text)
    return found.group(1) if found else ""


def test_a_wrong_password_is_refused_and_repeated_ones_lock_out(
    make_settings: Callable[..., Settings],
) -> None:
    with serve(make_settings(console_password=PASSWORD)) as app:
        wrong = [log_in(app.client, "guess").status_code for _ in range(MAX_FAILURES)]
        locked = log_in(app.client)  # even the right password, now
        still_out = app.client.get("/console")
        audit_rows = app.client.get("/console/audit")
    assert wrong == [401] * MAX_FAILURES
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 60
    assert "分钟后再试" in locked.text
    assert still_out.status_code == 303
    assert audit_rows.status_code == 303  # the audit page is not for the locked out either


def test_forms_without_their_csrf_token_are_refused(make_settings: Callable[..., Settings]) -> None:
    with serve(make_settings(console_password=PASSWORD)) as app:
        client = app.client
        client.get("/console/login")
        no_token = client.post("/console/login", data={"password": PASSWORD})
        other = httpx.Client(base_url=app.url)
        foreign = csrf_of(other.get("/console/login"))  # a token of someone else's session
        other.close()
        wrong_token = client.post("/console/login", data={"password": PASSWORD, "csrf": foreign})
        assert log_in(client).status_code == 303
        logout_without = client.post("/console/logout", data={})
        still_in = client.get("/console").status_code
        logout = client.post("/console/logout", data={"csrf": csrf_of(client.get("/console"))})
        after = client.get("/console").status_code
    assert no_token.status_code == 403
    assert wrong_token.status_code == 403
    assert logout_without.status_code == 403
    assert still_in == 200
    assert logout.status_code == 303
    assert after == 303


def test_a_forged_or_expired_cookie_is_not_a_session(make_settings: Callable[..., Settings]) -> None:
    with serve(make_settings(console_password=PASSWORD)) as app:
        assert log_in(app.client).status_code == 303
        real = app.client.cookies.get("dingbot_console")
        assert real
        forged = httpx.Client(base_url=app.url, cookies={"dingbot_console": real[:-4] + "AAAA"})
        forged_page = forged.get("/console")
        forged.close()
    with serve(make_settings(console_password="another password")) as other:
        moved = httpx.Client(base_url=other.url, cookies={"dingbot_console": real})  # the password changed
        moved_page = moved.get("/console")
        moved.close()
    assert forged_page.status_code == 303
    assert moved_page.status_code == 303


def test_addresses_outside_the_allowlist_are_refused(make_settings: Callable[..., Settings]) -> None:
    with serve(
        make_settings(console_password=PASSWORD, console_allowed_ips="10.0.0.0/8, 192.168.1.5")
    ) as app:
        refused = app.client.get("/console/login")
    with serve(make_settings(console_password=PASSWORD, console_allowed_ips="127.0.0.0/8")) as app:
        allowed = app.client.get("/console/login")
    assert refused.status_code == 403
    assert refused.headers["x-frame-options"] == "DENY"
    assert allowed.status_code == 200
