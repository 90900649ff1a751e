"""Memory recall quality: the benchmark's own data and scoring (bench/memory_recall.py), the form facts are
embedded in, and what the mock extraction learns from English sentences."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.memory.embeddings import LocalEmbeddings, MemoryEmbeddings, asking_form
from agent.model.mock_memory import MockExtractionModel
from bench.memory_recall import Fact, figures, load, measure, rank_in_prompt


def test_the_benchmark_data_has_what_the_issue_asks_for() -> None:
    facts, distractors = load()
    assert len(facts) >= 60
    assert len({f.id for f in facts}) == len(facts)
    assert all(len(f.ask) == 2 and all(q.strip() for q in f.ask) for f in facts)
    assert sum(f.say.isascii() for f in facts) >= 5  # some facts in English
    assert (
        sum(q.isascii() for f in facts if not f.say.isascii() for q in f.ask) >= 30
    )  # asked across languages
    assert sum(not q.isascii() for f in facts if f.say.isascii() for q in f.ask) >= 5
    assert {f.split for f in facts} == {"dev", "heldout"}
    assert sum(f.split == "heldout" for f in facts) >= 15
    assert len(distractors) >= 20
    told = {f.say for f in facts}
    assert not told & set(distractors)
    for fact in facts:  # reworded: a question never repeats the statement
        assert all(q.rstrip("？?") not in fact.say for q in fact.ask)


def test_rank_is_read_from_the_prompt_order() -> None:
    system = "规则……<memories>\n- 用户住在北京\n- 用户对花生过敏\n- 用户养猫\n</memories>"
    recalled = ["用户对花生过敏", "用户住在北京", "用户养猫"]  # the prompt, not this list, decides
    assert rank_in_prompt(system, recalled, ["用户对花生过敏"]) == 2
    assert rank_in_prompt(system, recalled, ["用户养狗"]) is None


def test_the_benchmark_measures_through_the_real_path(tmp_path: Path) -> None:
    facts = [
        Fact(id="peanut", say="我对花生过敏", ask=["我对花生过敏", "What is the capital of France?"]),
        Fact(id="home", say="我住在北京朝阳区", ask=["我住在北京朝阳区", "我住在北京朝阳区"]),
    ]
    outcomes = asyncio.run(measure(facts, ["我哥哥住在深圳"], tmp_path))
    assert [f.memories for f in facts] == [["用户对花生过敏"], ["用户住在北京朝阳区"]]
    assert outcomes[0].rank == 1
    assert outcomes[2].rank == outcomes[3].rank == 1
    assert outcomes[1].rank != 1  # an unrelated question does not find it first
    scored = figures(outcomes)
    assert scored["n"] == 4
    assert scored["r1"] == 0.75


def test_facts_are_embedded_as_the_person_would_ask() -> None:
    assert asking_form("用户住在北京") == "我住在北京"
    assert asking_form("用户的女儿叫Emma") == "我的女儿叫Emma"
    assert asking_form("User's daughter is called Emma") == "my daughter is called Emma"
    assert asking_form("User is a big fan of Formula 1") == "I am a big fan of Formula 1"
    assert asking_form("Usernames are hidden") == "Usernames are hidden"  # words, not letters
    local = LocalEmbeddings()
    wrapped = MemoryEmbeddings(local)
    assert wrapped.embed_query("用户住在北京") == local.embed_query("我住在北京")
    assert wrapped.embed_documents(["User likes tea"]) == local.embed_documents(["I likes tea"])


def test_mock_extraction_learns_sentences_that_start_with_my() -> None:
    assert MockExtractionModel.facts("My daughter is called Emma") == ["User's daughter is called Emma"]
    assert MockExtractionModel.facts("my cat is grey. I'm a big fan of Formula 1") == [
        "User's cat is grey",
        "User is a big fan of Formula 1",
    ]
