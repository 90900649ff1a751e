"""Several replicas on one PostgreSQL database and one Chroma server (here: two apps in one process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.memory.chroma import COLLECTION, chroma_client
from agent.settings.config import Settings
from tests.chroma import chroma_server, free_port
from tests.conftest import SECRET, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.waiting import wait_until

STAFF = "0422170123"


@pytest.fixture
def chroma_url(tmp_path: Path) -> Iterator[str]:
    with chroma_server(tmp_path / "chroma") as url:
        yield url


def say(app: Any, dingtalk: FakeDingTalk, text: str) -> str:
    """Send `text` as one person through `app`; the reply's text."""
    before = len(dingtalk.replies())
    body = callback(dingtalk.webhook(), text, senderStaffId=STAFF)
    assert app.post_callback(encode(body), signed_headers(SECRET)).status_code == 200
    dingtalk.wait_for(before + 1, path="/robot/sendBySession")
    return str(dingtalk.replies()[before]["text"]["content"])


def stored_on_the_server(url: str) -> list[str]:
    found = chroma_client(url).get_collection(COLLECTION).get(include=["metadatas"])
    return [str(m.get("data")) for m in found["metadatas"] or []]


@pytest.mark.postgres_only
def test_a_fact_told_to_one_replica_is_recalled_by_the_other_and_forgotten_by_both(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, chroma_url: str, tmp_path: Path
) -> None:
    a = make_settings(chroma_url=chroma_url, database_path=tmp_path / "a" / "bot.db")
    b = make_settings(chroma_url=chroma_url, database_path=tmp_path / "b" / "bot.db")
    with serve(a) as replica_a, serve(b) as replica_b:
        say(replica_a, fake_dingtalk, "我对花生过敏")
        wait_until(
            lambda: stored_on_the_server(chroma_url) == ["用户对花生过敏"], what="the fact on the server"
        )
        assert "用户对花生过敏" in say(replica_b, fake_dingtalk, "/memory")
        assert "和 1 条记忆" in say(replica_b, fake_dingtalk, "我能吃什么零食？")  # recalled through B
        assert "和 1 条记忆" in say(replica_a, fake_dingtalk, "我能吃什么零食？")  # A's cache holds it now
        assert say(replica_b, fake_dingtalk, "/forget all").startswith(
            "好的，我已经忘掉关于你的一切：1 条记忆"
        )
        assert stored_on_the_server(chroma_url) == []
        assert say(replica_a, fake_dingtalk, "/memory").startswith("我还没有记住关于你的事")
        # A's cached copy went with B's notice: the recall through A finds nothing (no stale copy)
        wait_until(
            lambda: "和 0 条记忆" in say(replica_a, fake_dingtalk, "我能吃什么零食？"), what="A forgot"
        )
        say(replica_b, fake_dingtalk, "我住在杭州")  # a new fact through B, while A has the person cached
        wait_until(lambda: stored_on_the_server(chroma_url) == ["用户住在杭州"], what="the new fact stored")
        wait_until(lambda: "和 1 条记忆" in say(replica_a, fake_dingtalk, "我住哪里？"), what="A hears of it")
    # mem0's own history (every add and delete, with the text) is kept by no replica's files
    assert not list(tmp_path.glob("*/bot_store/mem0_history.db"))


@pytest.mark.postgres_only
def test_a_vector_server_that_goes_away_makes_the_replica_unready_until_it_returns(
    make_settings: Callable[..., Settings], fake_dingtalk: FakeDingTalk, tmp_path: Path
) -> None:
    """Down at startup: memory is off (the service still answers) and /readyz 503; when the server
    comes up, the periodic check opens memory and the replica is ready; down again: 503."""
    port = free_port()
    settings = make_settings(chroma_url=f"http://127.0.0.1:{port}", check_interval_seconds=0.2)
    with serve(settings) as app:
        ready = app.client.get("/readyz")
        assert (ready.status_code, ready.json()["reason"]) == (503, "vector server unreachable")
        off = app.client.get("/healthz").json()["memory_off"]
        assert off == f"the vector server cannot be reached: Chroma at {settings.chroma_url} (ValueError)"
        assert "和 0 条记忆" in say(app, fake_dingtalk, "你好")  # answered all the same
        with chroma_server(tmp_path / "chroma", port) as url:
            wait_until(lambda: app.client.get("/readyz").status_code == 200, what="/readyz 200")
            wait_until(lambda: app.client.get("/healthz").json()["memory"] == "ok", what="memory on")
            say(app, fake_dingtalk, "我对花生过敏")
            wait_until(lambda: stored_on_the_server(url) == ["用户对花生过敏"], what="the fact on the server")
            assert "用户对花生过敏" in say(app, fake_dingtalk, "/memory")
        assert app.client.get("/readyz").json()["reason"] == "vector server unreachable"
