"""Reminders claimed and fired — a compare-and-set, DST's repeated hour, chat's own; on time through the
running service, once, after a restart, late with a note, dropped past the grace, where they were asked
(webhook, OpenAPI, the group with an @) — and told at once when they could never arrive. When they are due:
tests/test_reminder_times.py."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.messages import IncomingMessage
from agent.settings.config import Settings
from agent.storage.connection import Connection, transaction
from agent.storage.database import Database
from agent.tools.reminders import ReminderBook, claim_due
from api.delivery.courier import Courier
from api.delivery.outbox import Outbox
from api.delivery.reminders import ReminderClock, ReminderReach
from api.dingtalk.sender import SessionWebhookSender
from tests.assistants import person_message
from tests.conftest import SECRET, RunningApp, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk, Recorded
from tests.prometheus import sample
from tests.store import sql
from tests.waiting import wait_until

SHANGHAI = ZoneInfo("Asia/Shanghai")


def set_in(app: RunningApp, fake_dingtalk: FakeDingTalk, seconds: int, text: str, **fields: Any) -> None:
    """Ask the running (mock) service for a reminder `seconds` from now, as the model would call it."""
    args = json.dumps({"when": f"PT{seconds}S", "text": text}, ensure_ascii=False)
    body = callback(fake_dingtalk.webhook(), f"用工具 set_reminder {args}", **fields)
    assert app.post_callback(encode(body), signed_headers(SECRET)).status_code == 200


def reminder_posts(fake_dingtalk: FakeDingTalk) -> list[Recorded]:
    return [r for r in fake_dingtalk.requests if r.method == "POST" and "⏰" in r.body.decode()]


# --- claiming ----------------------------------------------------------------------------------


class _Interleaved:
    """A connection on which, just before the first reminder is moved, another process moves it."""

    def __init__(self, conn: Connection, other: Callable[[], None]) -> None:
        self.conn, self.other = conn, other

    def execute(self, statement: str, params: Any = ()) -> Any:
        if statement.startswith("UPDATE reminders") and self.other is not None:
            other, self.other = self.other, None  # type: ignore[assignment]
            other()
        return self.conn.execute(statement, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def _book_with(database: Database, now: list[float]) -> ReminderBook:
    await database.open()
    return ReminderBook(database, timezone=SHANGHAI, max_per_person=100, clock=lambda: now[0])


def test_claiming_is_a_compare_and_set_on_the_due_time(tmp_path: Any) -> None:
    """Between this check's read and its write another check fired the reminder (moved its due time):
    this one fires nothing."""
    now = [time.time()]

    async def go() -> tuple[list[Any], list[Any]]:
        database = Database(tmp_path / "r.db")
        book = await _book_with(database, now)
        try:
            await book.add(
                person_message(reply_url="http://127.0.0.1:9/x"), book.plan("PT1M", "喝水", "daily")
            )
            now[0] += 61
            path = tmp_path / "r.db"

            def meanwhile() -> None:
                sql(path, "UPDATE reminders SET due_at = due_at + 86400")

            def claim(conn: Connection) -> list[Any]:
                return claim_due(_Interleaved(conn, meanwhile), now[0], 3600)  # type: ignore[arg-type]

            first = await database.run(claim)
            again = await database.run(lambda conn: claim_due(conn, now[0], 3600))
            return first, again
        finally:
            await database.close()

    first, again = asyncio.run(go())
    assert first == []
    assert again == []  # not due any more: the other check moved it


def test_a_late_claim_in_the_repeated_hour_moves_the_reminder_forward(tmp_path: Any) -> None:
    """Daily at 02:30 in Berlin, claimed at 02:10 CET on the night the clocks go back (after 02:30 CEST):
    the next due time is strictly later — the timer never finds the same reminder due again."""
    berlin = ZoneInfo("Europe/Berlin")
    first_due = datetime(2025, 10, 26, 2, 30, tzinfo=berlin).timestamp()  # 00:30 UTC
    claimed_at = first_due + 40 * 60  # 01:10 UTC = 02:10 CET

    async def go() -> tuple[int, float, int]:
        database = Database(tmp_path / "r.db")
        await database.open()
        try:
            book = ReminderBook(database, timezone=berlin, max_per_person=5, clock=lambda: first_due - 60)
            await book.add(
                person_message(reply_url="http://127.0.0.1:9/x"), book.plan("2025-10-26T02:30", "x", "daily")
            )

            def claim(conn: Connection) -> list[Any]:
                with transaction(conn):
                    return claim_due(conn, claimed_at, 3600)

            fired = await database.run(claim)
            again = await database.run(claim)
            [(due_at,)] = sql(tmp_path / "r.db", "SELECT due_at FROM reminders")
            return len(fired), float(due_at), len(again)
        finally:
            await database.close()

    fired, due_at, again = asyncio.run(go())
    assert (fired, again) == (1, 0)
    assert due_at > claimed_at
    assert datetime.fromtimestamp(due_at, berlin).strftime("%m-%d %H:%M") == "10-27 02:30"


def test_the_service_never_fires_a_chat_reminder_and_a_chat_only_its_own(tmp_path: Any) -> None:
    now = [time.time()]

    async def go() -> tuple[list[str], list[str]]:
        database = Database(tmp_path / "r.db")
        book = await _book_with(database, now)
        try:
            for person, text in (("corp:u1", "服务的"), ("chat:wxl", "王的"), ("chat:other", "别人的")):
                message = person_message(
                    person_id=person, message_id=f"m-{person}", reply_url="http://127.0.0.1:9/x"
                )
                await book.add(message, book.plan("PT1M", text, None))
            now[0] += 61

            def claim(person: str | None) -> Callable[[Connection], list[Any]]:
                return lambda conn: claim_due(conn, now[0], 3600, person_id=person)

            service = [f.reminder.text for f in await database.run(claim(None))]
            chat = [f.reminder.text for f in await database.run(claim("chat:wxl"))]
            return service, chat
        finally:
            await database.close()

    assert asyncio.run(go()) == (["服务的"], ["王的"])


# --- firing -------------------------------------------------------------------------------------


def test_a_reminder_fires_at_its_due_time_by_the_timer_once(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    """The periodic check runs once an hour here: only the timer armed for the due time can fire it."""
    settings = make_settings(check_interval_seconds=3600)
    with serve(settings) as app:
        set_in(app, fake_dingtalk, 2, "喝水")
        [confirmation] = fake_dingtalk.wait_for(1)
        assert "提醒你：喝水" in confirmation.json()["text"]["content"]
        [reminder] = wait_until(lambda: reminder_posts(fake_dingtalk), what="the reminder")
        [(due_at, state, fired)] = sql(settings, "SELECT due_at, state, fired FROM reminders")
        metrics = app.client.get("/metrics").text
    assert sample(metrics, "dingbot_tool_calls_total", outcome="ok", tool="set_reminder") == 1
    assert sample(metrics, "dingbot_reminders_fired_total", outcome="sent") == 1
    assert sample(metrics, "dingbot_reminder_delay_seconds_count") == 1
    assert reminder.json()["text"]["content"] == "⏰ 提醒：喝水"
    assert reminder.received_epoch >= due_at  # never early
    assert (state, fired) == ("done", 1)
    assert len(reminder_posts(fake_dingtalk)) == 1
    [(msg_id, sent)] = sql(settings, "SELECT msg_id, state FROM outbox WHERE msg_id LIKE 'reminder:%'")
    assert sent == "sent"
    assert msg_id == f"reminder:1:{round(due_at)}"
    assert (
        sql(settings, "SELECT origin FROM reminders")[0][0].count("sendBySession") == 0
    )  # spent: no webhook


def test_a_reminder_set_before_a_restart_arrives_once_after_it(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    settings = make_settings(check_interval_seconds=3600)
    with serve(settings) as app:
        set_in(app, fake_dingtalk, 2, "吃药")
        fake_dingtalk.wait_for(1)
    [(due_at,)] = sql(settings, "SELECT due_at FROM reminders")
    assert reminder_posts(fake_dingtalk) == []
    while time.time() < due_at:  # down over its due time
        time.sleep(0.1)
    with serve(settings) as app:
        [reminder] = wait_until(lambda: reminder_posts(fake_dingtalk), what="the reminder after the restart")
        assert reminder.json()["text"]["content"] == "⏰ 提醒：吃药"  # a few seconds late: no note
    with serve(settings):  # a third start finds nothing more to fire
        pass
    assert len(reminder_posts(fake_dingtalk)) == 1


def test_missed_while_down_it_says_how_late_and_past_the_grace_it_is_dropped(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(check_interval_seconds=3600, reminder_grace_seconds=3600)
    with serve(settings) as app:
        set_in(app, fake_dingtalk, 600, "交周报")
        fake_dingtalk.wait_for(1)
        set_in(app, fake_dingtalk, 600, "过期的事")
        fake_dingtalk.wait_for(2)
    now = time.time()
    sql(settings, "UPDATE reminders SET due_at = ? WHERE id = 1", now - 12 * 60)
    sql(settings, "UPDATE reminders SET due_at = ? WHERE id = 2", now - 3700)
    caplog.set_level(logging.INFO)
    with serve(settings):
        [late] = wait_until(lambda: reminder_posts(fake_dingtalk), what="the late reminder")
    text = late.json()["text"]["content"]
    assert text.startswith("⏰ 提醒：交周报\n（本应在 ")
    late = re.search(r"晚了 (\d+) 分钟：当时服务不在线", text)
    assert late is not None
    assert int(late.group(1)) >= 12  # due 12 minutes before the restart began
    assert len(reminder_posts(fake_dingtalk)) == 1
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == [
        f"reminder 2 dropped: due {dropped[0].split('due ')[1].split(' s')[0]} s ago, past "
        "REMINDER_GRACE_SECONDS=3600 (the service was down)"
    ]
    assert "过期的事" not in caplog.text
    assert sql(settings, "SELECT id, state FROM reminders ORDER BY id") == [(1, "done"), (2, "done")]


def test_two_checks_at_once_fire_each_reminder_exactly_once(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    """Two processes' periodic checks (two databases objects: two connections, on PostgreSQL two
    sessions) fire 40 due reminders at the same moment: 40 messages, none twice."""
    settings = make_settings()
    now = [time.time()]

    async def go() -> tuple[int, int]:
        first, second = Database.for_settings(settings), Database.for_settings(settings)
        await first.open()
        await second.open()
        async with SessionWebhookSender() as webhook:
            clocks = []
            for database in (first, second):
                book = ReminderBook(database, timezone=SHANGHAI, max_per_person=100, clock=lambda: now[0])
                courier = Courier(outbox=Outbox(database), webhook=webhook, openapi=None, robot=None)
                clocks.append(
                    (
                        book,
                        ReminderClock(
                            book=book,
                            database=database,
                            courier=courier,
                            prompts_for=prompts,
                            settings=settings,
                        ),
                    )
                )
            book = clocks[0][0]
            for n in range(40):
                message = person_message(reply_url=fake_dingtalk.webhook(), person_id=f"corp:p{n % 4}")
                await book.add(message, book.plan("PT1M", f"事情{n}", None))
            now[0] += 61
            counts = await asyncio.gather(*(clock.fire_due() for _, clock in clocks))
            # the sends run on after the claims: all of them reach DingTalk before the clocks stop
            await asyncio.to_thread(fake_dingtalk.wait_for, 40, path="/robot/sendBySession")
            for _, clock in clocks:
                await clock.stop()
        await first.close()
        await second.close()
        return counts[0], counts[1]

    from agent.prompts.library import PromptLibrary

    library = PromptLibrary(settings.prompts_dir)

    def prompts(message: IncomingMessage) -> Any:
        return library.for_conversation(message.conversation_id)

    one, other = asyncio.run(go())
    assert one + other == 40
    texts = sorted(r.json()["text"]["content"] for r in reminder_posts(fake_dingtalk))
    assert texts == sorted(f"⏰ 提醒：事情{n}" for n in range(40))
    assert sql(settings, "SELECT COUNT(*) FROM outbox WHERE msg_id LIKE 'reminder:%'") == [(40,)]


# --- where it goes ------------------------------------------------------------------------------


def test_no_route_at_the_due_time_is_said_when_the_reminder_is_set(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    settings = make_settings()
    soon = int(time.time() * 1000) + 5 * 60 * 1000  # the session webhook expires in 5 minutes
    with serve(settings) as app:
        body = callback(fake_dingtalk.webhook(), "明天上午9点提醒我交周报", sessionWebhookExpiredTime=soon)
        app.post_callback(encode(body), signed_headers(SECRET))
        [answer] = fake_dingtalk.wait_for(1)
    text = answer.json()["text"]["content"]
    assert "到时候我发不出去" in text
    assert "DINGTALK_CLIENT_ID 和 DINGTALK_CLIENT_SECRET" in text
    assert sql(settings, "SELECT COUNT(*) FROM reminders") == [(0,)]


def test_reachability_rules() -> None:
    message = person_message(reply_url="https://oapi.dingtalk.com/robot/sendBySession?session=x")
    expires = int(time.time() * 1000) + 90 * 60 * 1000
    message = replace(message, reply_url_expires_ms=expires)
    bare = Settings(_env_file=None, force_mock_openai=True)  # type: ignore[call-arg]
    app = Settings(  # type: ignore[call-arg]
        _env_file=None, force_mock_openai=True, dingtalk_client_id="k", dingtalk_client_secret="s"
    )
    soon, tomorrow = time.time() + 600, time.time() + 86400
    assert ReminderReach(bare).problem(message, soon, repeats=False) is None  # the webhook lasts
    assert ReminderReach(bare).problem(message, tomorrow, repeats=False).why == "no_app_credentials"  # type: ignore[union-attr]
    assert ReminderReach(bare).problem(message, soon, repeats=True).why == "no_app_credentials"  # type: ignore[union-attr]
    assert ReminderReach(app).problem(message, tomorrow, repeats=True) is None
    external = replace(message, sender_staff_id="")
    problem = ReminderReach(app).problem(external, tomorrow, repeats=False)
    assert problem is not None
    assert (problem.why, problem.settings) == ("external_user", "")
    assert problem.before == pytest.approx(expires / 1000 - 30)
    group_guest = replace(external, is_group=True)
    assert ReminderReach(app).problem(group_guest, tomorrow, repeats=False) is None  # the group send


def test_in_a_group_after_the_webhook_expired_it_goes_by_the_group_send_with_an_at(
    app_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    expired_soon = int(time.time() * 1000) + 5_000  # inside the courier's margin: not used
    with serve(app_settings(check_interval_seconds=3600)) as app:
        set_in(app, fake_dingtalk, 1, "开会", group=True, sessionWebhookExpiredTime=expired_soon)
        wait_until(lambda: len(fake_dingtalk.posts("/v1.0/robot/groupMessages/send")) >= 2, what="2 sends")
    confirmation, reminder = (r.json() for r in fake_dingtalk.posts("/v1.0/robot/groupMessages/send"))
    assert "提醒你：开会" in json.loads(confirmation["msgParam"])["content"]
    assert reminder["openConversationId"] == "cidGroupAbc/x+1=="
    assert json.loads(reminder["msgParam"])["content"] == "@042217062297 ⏰ 提醒：开会"
    assert fake_dingtalk.replies() == []  # nothing through the expired webhook


def test_one_to_one_after_the_webhook_expired_it_goes_by_the_one_to_one_send(
    app_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk
) -> None:
    expired_soon = int(time.time() * 1000) + 5_000
    with serve(app_settings(check_interval_seconds=3600)) as app:
        set_in(app, fake_dingtalk, 1, "喝水", sessionWebhookExpiredTime=expired_soon)
        wait_until(lambda: len(fake_dingtalk.posts("/v1.0/robot/oToMessages/batchSend")) >= 2, what="2 sends")
    reminder = fake_dingtalk.posts("/v1.0/robot/oToMessages/batchSend")[1].json()
    assert reminder["userIds"] == ["042217062297"]
    assert json.loads(reminder["msgParam"])["content"] == "⏰ 提醒：喝水"
