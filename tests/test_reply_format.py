"""Reply bodies for session webhooks, the webhook host rule, Markdown shaping."""

from __future__ import annotations

import pytest

from agent.formatting import has_structure, title_of
from agent.messages import Reply
from api.dingtalk.parse import parse_callback
from api.dingtalk.reply import (
    build_reply_bodies,
    encode_body,
    tables_to_lists,
    webhook_allowed,
    without_html,
)
from tests.fakes.payloads import callback, encode

HOOK = "https://oapi.dingtalk.com/robot/sendBySession?session=1"
BASES = ["https://oapi.dingtalk.com", "https://api.dingtalk.com"]


def test_direct_text_reply_has_no_mention() -> None:
    m = parse_callback(encode(callback(HOOK)))
    assert build_reply_bodies(m, Reply("好的")) == [
        {"msgtype": "text", "text": {"content": "好的"}, "at": {"isAtAll": False}}
    ]


def test_group_markdown_reply_mentions_in_text_and_at() -> None:
    m = parse_callback(encode(callback(HOOK, group=True)))
    [body] = build_reply_bodies(m, Reply("## 步骤\n- 一\n- 二", markdown=True, title="步骤"))
    assert body == {
        "msgtype": "markdown",
        "markdown": {"title": "步骤", "text": "## 步骤\n- 一\n- 二\n\n@042217062297"},
        "at": {"isAtAll": False, "atUserIds": ["042217062297"]},
    }


def test_tables_become_lists() -> None:
    text = "对比：\n| 名称 | 价格 |\n|---|:---:|\n| 苹果 | 5 |\n| 梨 | 3 |\n结束"
    assert tables_to_lists(text) == "对比：\n- 名称：苹果；价格：5\n- 名称：梨；价格：3\n结束"


@pytest.mark.parametrize(
    ("text", "structured"),
    [
        ("# 标题\n正文", True),
        ("1. 第一步\n2. 第二步", True),
        ("- 一项", True),
        ("这是 **重点**", True),
        ("见 [文档](https://example.com)", True),
        ("```python\nprint(1)\n```", True),
        ("普通的一句话，没有结构。", False),
        ("价格是 3*4=12", False),
    ],
)
def test_structure_detection(text: str, structured: bool) -> None:
    assert has_structure(text) is structured


def test_title_is_plain_and_short() -> None:
    assert title_of("## **部署步骤**：如下\n- 一") == "部署步骤**：如下".replace("**", "")
    assert len(title_of("很" * 50)) == 20


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        (HOOK, True),
        ("https://oapi.dingtalk.com:443/robot/sendBySession?session=1", True),
        ("https://api.dingtalk.com/v1.0/robot/x", True),
        ("http://oapi.dingtalk.com/robot/sendBySession", False),
        ("https://oapi.dingtalk.com:8443/robot", False),
        ("https://oapi.dingtalk.com.evil.com/robot", False),
        ("https://oapi.dingtalk.com@evil.com/robot", False),
        ("https://evil.com/?h=oapi.dingtalk.com", False),
        ("not a url", False),
        ("https://[::1/robot", False),
        ("https://evil.com\t@oapi.dingtalk.com/", False),
        ("https://oapi.dingtalk\n.com/x", False),
        ("https://oapi.dingtalk.com/x\x7f", False),
        ("ftp://oapi.dingtalk.com/x", False),
        # DingTalk's host to httpx (the file API), no URL at all to aiohttp's parser (the reply sender): the
        # two clients must agree on where a webhook goes, so it is refused
        ("https://evil.com\\@oapi.dingtalk.com/robot", False),
    ],
)
def test_webhook_host_rule(url: str, ok: bool) -> None:
    assert webhook_allowed(url, BASES) is ok


def test_long_reply_is_split_on_line_breaks_under_the_byte_limit() -> None:
    m = parse_callback(encode(callback(HOOK, group=True)))
    lines = [f"第{i}行：" + "很长的中文内容" * 30 for i in range(60)]  # ~38 KB of UTF-8
    bodies = build_reply_bodies(m, Reply("\n".join(lines)))
    assert len(bodies) >= 3
    assert all(len(encode_body(b)) <= 19_000 for b in bodies)
    texts = [b["text"]["content"] for b in bodies]
    assert texts[0].startswith("@042217062297 第0行")
    assert bodies[0]["at"]["atUserIds"] == ["042217062297"]
    assert all("atUserIds" not in b["at"] for b in bodies[1:])
    rebuilt = "\n".join([texts[0].removeprefix("@042217062297 "), *texts[1:]])
    assert rebuilt == "\n".join(lines)
    assert all(not t.startswith("\n") and t for t in texts)


def test_one_giant_line_is_cut_by_characters() -> None:
    m = parse_callback(encode(callback(HOOK)))
    text = "字" * 20_000  # 60 KB on one line
    bodies = build_reply_bodies(m, Reply(text, markdown=True, title="长"), max_bytes=5_000)
    assert all(len(encode_body(b)) <= 5_000 for b in bodies)
    assert "".join(b["markdown"]["text"] for b in bodies) == text
    assert len(bodies) == len(encode_body({"x": text})) // 5_000 + 1


def test_encoded_size_counts_chinese_as_three_bytes() -> None:
    assert len(encode_body({"t": "中"})) == len('{"t":""}') + 3


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ('看这里<img src="https://evil.example/x.png?q=secret">', "看这里"),
        ("<b>重要</b>：明天开会", "重要：明天开会"),
        ("<script>alert(1)</script>", "alert(1)"),
        ('<font color="red">红字</font>', "红字"),
        ("注释<!-- 隐藏的 -->之后", "注释之后"),
        ("List<String> 和 a<b>c 的比较：x < y", "List<String> 和 ac 的比较：x < y"),
        ("代码 `<b>粗</b>` 保留", "代码 `<b>粗</b>` 保留"),
        ("```html\n<div>块</div>\n```\n<div>外</div>", "```html\n<div>块</div>\n```\n外"),
    ],
)
def test_html_from_the_model_is_not_rendered(written: str, shown: str) -> None:
    assert without_html(written) == shown


def test_a_markdown_reply_carries_no_html_and_a_text_reply_is_left_as_written() -> None:
    m = parse_callback(encode(callback(HOOK)))
    answer = '## 图\n<img src="https://evil.example/t.png">看'
    [markdown] = build_reply_bodies(m, Reply(answer, markdown=True))
    assert markdown["markdown"]["text"] == "## 图\n看"
    [text] = build_reply_bodies(m, Reply("<b>原样</b>"))  # a text message is not rendered: shown as written
    assert text["text"]["content"] == "<b>原样</b>"
