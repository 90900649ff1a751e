"""The outbox under contention and partial failure: real SQLite, the real courier, a local DingTalk."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.storage.connection import Connection
from agent.storage.database import Database
from agent.storage.engine import Engine
from api.delivery.courier import CLAIM_SECONDS, Courier, Delivery
from api.delivery.outbox import Outbox
from api.dingtalk.reply import Route
from api.dingtalk.sender import SessionWebhookSender
from tests.fakes.servers import FakeDingTalk
from tests.store import sql
from tests.waiting import PATIENCE

WEBHOOK = "/robot/sendBySession"


def route(fake: FakeDingTalk) -> Route:
    return Route(fake.webhook(), None, "cid1", False, "u1", "robot")


def parts(n: int) -> list[dict[str, object]]:
    return [{"msgtype": "text", "text": {"content": f"第 {i + 1} 部分"}} for i in range(n)]


def states(path: Path | Engine) -> list[tuple[Any, ...]]:
    return sql(path, "SELECT part, state, last_error FROM outbox ORDER BY part")


def test_a_given_up_part_takes_the_later_parts_with_it(
    database_target: Path | Engine, fake_dingtalk: FakeDingTalk
) -> None:
    fake_dingtalk.errcodes.append(400013)  # the first part: the robot was removed, not retryable
    path = database_target

    async def scenario() -> tuple[Delivery, int]:
        db = Database(path)
        await db.open()
        async with SessionWebhookSender() as webhook:
            try:
                outbox = Outbox(db)
                courier = Courier(outbox=outbox, webhook=webhook, openapi=None, robot=None)
                rows = await outbox.store_reply("m1", "corp:u1", route(fake_dingtalk), parts(2))
                outcome = await courier.deliver(rows)
                await courier.send_due()  # the periodic check finds nothing left to send
                return outcome, len(await outbox.due_replies())
            finally:
                await db.close()

    assert asyncio.run(scenario()) == (Delivery.FAILED, 0)
    assert [r.json()["text"]["content"] for r in fake_dingtalk.posts(WEBHOOK)] == ["第 1 部分"]
    [(_, first, _), (_, second, why)] = states(path)
    assert (first, second) == ("failed", "failed")
    assert why == "an earlier part of this reply was not sent"


def test_two_processes_checking_one_outbox_send_a_due_reply_once(
    database_target: Path | Engine, fake_dingtalk: FakeDingTalk
) -> None:
    in_flight = threading.Event()
    fake_dingtalk.holds.append(in_flight)  # the first send stays unanswered until the other check is done
    path = database_target

    async def scenario() -> list[int]:
        first, second = Database(path), Database(path)  # two connections, as two processes have
        await first.open()
        await second.open()
        async with SessionWebhookSender() as webhook:
            try:
                await Outbox(first).store_reply("m1", "corp:u1", route(fake_dingtalk), parts(3))
                couriers = [
                    Courier(outbox=Outbox(db), webhook=webhook, openapi=None, robot=None)
                    for db in (first, second)
                ]
                sending = asyncio.create_task(couriers[0].send_due())
                await asyncio.to_thread(fake_dingtalk.wait_for, 1)  # its first part is on the wire
                other = await asyncio.wait_for(couriers[1].send_due(), PATIENCE)  # the other process checks
                in_flight.set()
                return [await sending, other]
            finally:
                in_flight.set()
                await first.close()
                await second.close()

    completed = asyncio.run(scenario())
    assert completed == [1, 0]  # one of them sent the reply, the other found it taken
    contents = [r.json()["text"]["content"] for r in fake_dingtalk.posts(WEBHOOK)]
    assert contents == ["第 1 部分", "第 2 部分", "第 3 部分"]
    assert [state for _, state, _ in states(path)] == ["sent", "sent", "sent"]


def test_a_reply_claimed_as_it_is_stored_is_sent_once_by_its_own_process(
    database_target: Path | Engine, fake_dingtalk: FakeDingTalk
) -> None:
    """The dispatcher stores a reply with its first part claimed (one transaction, no separate claim):
    another process's periodic check, running between the store and the send, cannot take that part."""
    path = database_target

    async def scenario() -> tuple[list[float | None], int, Delivery]:
        first, second = Database(path), Database(path)  # two connections, as two processes have
        await first.open()
        await second.open()
        async with SessionWebhookSender() as webhook:
            try:
                mine = Courier(outbox=Outbox(first), webhook=webhook, openapi=None, robot=None)
                other = Courier(outbox=Outbox(second), webhook=webhook, openapi=None, robot=None)
                rows = await Outbox(first).store_reply(
                    "m1", "corp:u1", route(fake_dingtalk), parts(2), claim_seconds=mine.claim_seconds
                )
                taken_elsewhere = await other.send_due()  # between the store and the send
                return [r.claimed_until for r in rows], taken_elsewhere, await mine.deliver(rows)
            finally:
                await first.close()
                await second.close()

    before = time.time()
    claims, taken_elsewhere, outcome = asyncio.run(scenario())
    assert claims[0] is not None  # the first part: claimed
    assert claims[0] >= before + CLAIM_SECONDS
    assert claims[1] is None  # a later part is claimed in its turn
    assert taken_elsewhere == 0  # the other process found the reply held (without the claim: 1)
    assert outcome is Delivery.SENT
    contents = [r.json()["text"]["content"] for r in fake_dingtalk.posts(WEBHOOK)]
    assert contents == ["第 1 部分", "第 2 部分"]  # each once, in order
    assert [state for _, state, _ in states(path)] == ["sent", "sent"]


def test_a_reply_sent_late_renews_the_claim_its_own_process_made_when_storing_it(
    database_target: Path | Engine, fake_dingtalk: FakeDingTalk
) -> None:
    """More than half of the store-time claim gone (a slow answer, a busy lock): the courier renews its own
    claim (a compare-and-set on it) instead of waiting for it to lapse; before, the reply waited out the
    whole claim (RETRYING, nothing sent)."""
    claim = 2.0

    async def scenario() -> Delivery:
        db = Database(database_target)
        await db.open()
        async with SessionWebhookSender() as webhook:
            try:
                courier = Courier(
                    outbox=Outbox(db), webhook=webhook, openapi=None, robot=None, claim_seconds=claim
                )
                rows = await Outbox(db).store_reply(
                    "m1", "corp:u1", route(fake_dingtalk), parts(1), claim_seconds=claim
                )
                await asyncio.sleep(claim * 0.6)  # past half of the claim, not past all of it
                return await courier.deliver(rows)
            finally:
                await db.close()

    assert asyncio.run(scenario()) is Delivery.SENT
    assert [r.json()["text"]["content"] for r in fake_dingtalk.posts(WEBHOOK)] == ["第 1 部分"]


class TurnOfTheReply:
    """An AlsoWrite as the dispatcher gives one (the reply's turn for the history): records what it saw,
    on its own connection and, from outside, on another."""

    def __init__(self, where: Path | Engine, fail: bool = False) -> None:
        self.where = where
        self.fail = fail
        self.seen: list[str] = []

    def write(self, conn: Connection) -> None:
        inside = conn.execute("SELECT state FROM outbox WHERE msg_id = 'm1'").fetchone()[0]
        outside = sql(self.where, "SELECT state FROM outbox WHERE msg_id = 'm1'")[0][0]
        self.seen.append(f"write: {inside} inside, {outside} outside")
        if self.fail:
            raise RuntimeError("the history write failed")

    def then(self, conn: Connection) -> None:
        outside = sql(self.where, "SELECT state FROM outbox WHERE msg_id = 'm1'")[0][0]
        self.seen.append(f"then: {outside} outside")


def test_what_rides_with_marking_a_reply_sent_is_in_its_transaction(database_target: Path | Engine) -> None:
    """Marking the last part sent carries the reply's history turn (one round trip): inside the same
    transaction; `then` runs after the commit. A turn that fails never takes the sent mark with it."""

    async def scenario(also: TurnOfTheReply) -> str:
        db = Database(database_target)
        await db.open()
        try:
            outbox = Outbox(db)
            [row] = await outbox.store_reply(
                "m1", "corp:u1", Route("https://x", None, "c", False, "u", "r"), parts(1)
            )
            await outbox.mark_sent(row.id, also)  # raises nothing: DingTalk has the reply
            return str(sql(database_target, "SELECT state FROM outbox WHERE msg_id = 'm1'")[0][0])
        finally:
            await db.close()

    kept = TurnOfTheReply(database_target)
    assert asyncio.run(scenario(kept)) == "sent"
    # marked in the same transaction (not committed while the turn is written), committed before `then`
    assert kept.seen == ["write: sent inside, pending outside", "then: sent outside"]
    sql(database_target, "DELETE FROM outbox")
    failing = TurnOfTheReply(database_target, fail=True)
    # DingTalk has the reply: when the turn fails, the mark is made alone (never sent again) and `then` is
    # not called, so the turn is written apart
    assert asyncio.run(scenario(failing)) == "sent"
    assert failing.seen == ["write: sent inside, pending outside"]


OUTBOX_BEFORE_SKIPPED = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY, msg_id TEXT, part INTEGER NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('reply', 'robot')), person_id TEXT, body TEXT, route TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_error TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (msg_id, part)
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
INSERT INTO outbox (msg_id, part, channel, state, next_attempt_at, created_at, updated_at)
VALUES ('old-message', 0, 'reply', 'pending', 0, 0, 0);
"""


def test_an_outbox_from_before_the_skipped_state_is_migrated_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OUTBOX_BEFORE_SKIPPED)

    async def scenario() -> tuple[list[tuple[str, str]], set[str]]:
        db = Database(path)
        await db.open()
        try:
            await Outbox(db).skip(1, "a card carried the answer")
            rows = await db.run(lambda c: c.execute("SELECT msg_id, state FROM outbox").fetchall())
            indexes = await db.run(
                lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            )
            return rows, indexes
        finally:
            await db.close()

    rows, indexes = asyncio.run(scenario())
    assert rows == [("old-message", "skipped")]
    assert {"outbox_due", "outbox_updated"} <= indexes


def test_a_redelivery_keeps_the_stored_reply_s_card(
    database_target: Path | Engine, fake_dingtalk: FakeDingTalk
) -> None:
    async def scenario() -> list[str]:
        db = Database(database_target)
        await db.open()
        try:
            outbox = Outbox(db)
            with_card = replace(route(fake_dingtalk), card_id="card-1")
            await outbox.store_reply("m1", "corp:u1", with_card, [{"card": {"text": "t", "failed": False}}])
            await outbox.revive("m1", route(fake_dingtalk))  # a fresh webhook, no card known to the callback
            return [row.route.card_id for parts in await outbox.due_replies() for row in parts if row.route]
        finally:
            await db.close()

    assert asyncio.run(scenario()) == ["card-1"]
