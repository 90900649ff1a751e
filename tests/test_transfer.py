"""One machine to replicas: a database made by the release before versioned schemas (with messages,
replies and memories) opened by this code on SQLite, exported, imported into PostgreSQL + Chroma."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.memory.embeddings import build_embeddings
from agent.memory.store import Mem0Store
from agent.messages import message_to_json
from agent.model.mock_memory import MockExtractionModel
from agent.settings.config import Settings
from agent.storage.database import Database
from api.dingtalk.reply import Route
from dingbot.cli import main
from tests.assistants import person_message
from tests.chroma import chroma_server
from tests.conftest import serve
from tests.fakes.servers import FakeDingTalk
from tests.store import sql
from tests.test_replicas import say, stored_on_the_server

DATA = Path(__file__).parent / "data"
STAFF = "0422170123"  # tests/test_replicas.py's person
PERSON = "ding9f50b15bccd16741:0422170123"  # corp:staff, as the callback names them


def one_machine(settings: Settings, fake_dingtalk: FakeDingTalk) -> None:
    """What a busy single machine leaves: history, an answered message, a reply not sent yet, a sharing
    choice, a learning job, a forget mark (in the old schema), and two memories in the embedded store."""
    settings.database_path.parent.mkdir(parents=True)
    message = message_to_json(person_message(message_id="m-unsent"))
    route = Route(fake_dingtalk.webhook(), None, "cid1", False, "u1", "robot").to_json()
    with sqlite3.connect(settings.database_path) as conn:
        conn.executescript((DATA / "schema_before_versions.sql").read_text())
        now = time.time()  # recent: the new setup's retention keeps them
        conn.execute("INSERT INTO history VALUES (7, 'scope-1', ?, 'human', '旧的话', ?)", (PERSON, now))
        conn.execute("INSERT INTO history VALUES (8, 'scope-1', ?, 'ai', '旧的回答', ?)", (PERSON, now))
        conn.execute("INSERT INTO inbox VALUES ('m-unsent', 'done', 1.0, 2.0, ?, NULL, 0)", (PERSON,))
        conn.execute(
            "INSERT INTO outbox VALUES (3, 'm-unsent', 0, 'reply', ?, ?, ?, 'pending', 1, 0, NULL, 1, 1)",
            (PERSON, '{"msgtype": "text", "text": {"content": "迟到的回答"}}', route),
        )
        conn.execute("INSERT INTO memory_sharing VALUES (?, 1)", (PERSON,))
        conn.execute("INSERT INTO learning VALUES ('m-unsent', ?, ?, 4.0)", (PERSON, message))
        conn.execute("INSERT INTO forgotten VALUES ('corp:someone-else', 5.0)")

    async def upgrade() -> None:  # the new code opens it: migrated in place
        database = Database(settings.database_path)
        await database.open()
        await database.close()

    asyncio.run(upgrade())
    with sqlite3.connect(settings.database_path) as conn:  # a reminder, in the schema it came with
        origin = message_to_json(person_message(text="", reply_url=fake_dingtalk.webhook()))
        conn.execute(
            "INSERT INTO reminders (id, person_id, conversation_id, text, due_at, repeat, anchor, timezone, "
            "origin, state, fired, created_at, updated_at) VALUES (4, ?, 'cid1', '交周报', ?, 'weekly', "
            "'2026-12-04T09:00:00', "
            "'Asia/Shanghai', ?, 'active', 0, ?, ?)",
            (PERSON, time.time() + 86400, origin, time.time(), time.time()),
        )
        conn.execute(  # the file a conversation asked about a minute ago: its next question still can
            "INSERT INTO file_context (scope, person_id, name, label, pages, unit, complete, text, "
            "created_at) VALUES ('cid1\x1fp', ?, '周报.pdf', 'PDF', 3, '页', 1, '本周完成登录模块', ?)",
            (PERSON, time.time() - 60),
        )
        conn.execute(  # the summary of what left that conversation's window, and the tokens it cost
            "INSERT INTO summaries (scope, text, version, oldest_at, updated_at) "
            "VALUES ('scope-1', ?, 3, ?, ?)",
            ("- 用户说：旧的话", now, time.time()),
        )
        conn.execute("INSERT INTO summary_people (scope, person_id) VALUES ('scope-1', ?)", (PERSON,))
        conn.execute("INSERT INTO token_usage VALUES (?, '2026-12-03', 'gpt-4-turbo', 1200, 34)", (PERSON,))
        conn.execute(
            "INSERT INTO console_audit (at, address, action, target) VALUES (1.0, '10.0.0.2', 'login', '')"
        )
    store = Mem0Store.open(
        settings, extraction_model=MockExtractionModel(), embeddings=build_embeddings(settings)
    )
    try:
        store.add("用户对花生过敏", PERSON, {"chat": "direct", "conversation_id": "cid1"})
        store.add("用户住在杭州", PERSON, {"chat": "direct", "conversation_id": "cid1"})
    finally:
        store.close()


@pytest.mark.postgres_only
def test_one_machine_moves_to_postgres_and_chroma_with_nothing_lost(
    make_settings: Callable[..., Settings],
    fake_dingtalk: FakeDingTalk,
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = make_settings(database_url=None)
    one_machine(before, fake_dingtalk)
    monkeypatch.setenv("FORCE_MOCK_OPENAI", "1")
    monkeypatch.setenv("DATABASE_PATH", str(before.database_path))
    exported = tmp_path / "export.jsonl"
    assert main(["export", str(exported)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"exported to {exported}: 2 history, 1 inbox, 1 outbox, 1 memory_sharing, 1 learning, 1 forgotten, "
        "1 reminders, 1 file_context, 1 summaries, 1 summary_people, 1 token_usage, 1 console_audit, "
        "2 memories"
    )
    with chroma_server(tmp_path / "chroma") as chroma:
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("CHROMA_URL", chroma)
        assert main(["import", str(exported)]) == 0
        assert capsys.readouterr().out.strip() == (
            f"imported from {exported}: 2 history, 1 inbox, 1 outbox, 1 memory_sharing, 1 learning, "
            "1 forgotten, 1 reminders, 1 file_context, 1 summaries, 1 summary_people, 1 token_usage, "
            "1 console_audit, 2 memories"
        )
        assert main(["import", str(exported)]) == 0  # again: nothing doubled
        assert "0 history, 0 inbox, 0 outbox" in capsys.readouterr().out
        assert sorted(stored_on_the_server(chroma)) == ["用户住在杭州", "用户对花生过敏"]
        assert sql(make_settings(), "SELECT id, content FROM history ORDER BY id") == [
            (7, "旧的话"),
            (8, "旧的回答"),
        ]
        after = make_settings(chroma_url=chroma, check_interval_seconds=0.2)
        with serve(after) as app:
            [late] = fake_dingtalk.wait_for(1)  # the unsent reply goes out from the new setup
            assert late.json()["text"]["content"] == "迟到的回答"
            listed = say(app, fake_dingtalk, "/memory")  # the memories, searched on the server
            assert "用户对花生过敏" in listed
            assert "用户住在杭州" in listed
            say(app, fake_dingtalk, "你好")  # its turn gets fresh ids, past the imported ones
        assert [row[0] for row in sql(after, "SELECT id FROM history ORDER BY id")][:2] == [7, 8]
        assert len(sql(after, "SELECT id FROM history WHERE id > 8")) == 2
        assert sql(after, "SELECT id, text, repeat, state FROM reminders") == [
            (4, "交周报", "weekly", "active")
        ]
        assert sql(after, "SELECT text, version FROM summaries") == [("- 用户说：旧的话", 3)]
        moved = "SELECT prompt_tokens FROM token_usage WHERE person_id = ? AND day = '2026-12-03'"
        assert sql(after, moved, PERSON) == [(1200,)]  # and today's messages count on from there
        assert sql(after, "SELECT name, complete, text FROM file_context") == [
            ("周报.pdf", 1, "本周完成登录模块")
        ]
