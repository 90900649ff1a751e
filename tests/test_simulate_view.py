"""How `dingbot simulate` shows a reply: as DingTalk renders it (dingbot/simulate_view.py)."""

from __future__ import annotations

import json

from dingbot import simulate, simulate_view


def test_render_markdown_reads_like_dingtalk() -> None:
    text = "# 标题\n1. 第一\n* 星号\n![图](https://e.com/a.png)\n```\ncode\n```\n*斜体* 与 __粗体__"
    assert simulate_view.render_markdown(text).splitlines() == [
        "标题",
        "1. 第一",
        "• 星号",
        "[图片: 图] https://e.com/a.png",
        "    code",
        "斜体 与 粗体",
    ]


def test_describe_shows_at_all_and_unknown_types() -> None:
    at_all = simulate.Part(
        1.0, json.dumps({"msgtype": "text", "text": {"content": "大家好"}, "at": {"isAtAll": True}}).encode()
    )
    assert simulate.describe(at_all, "小钉", {}) == "小钉 · 1.00 s · @所有人\n大家好"
    link = simulate.Part(0.5, b'{"msgtype":"link","link":{"title":"t"}}')
    assert simulate.describe(link, "小钉", {}).startswith("小钉 · 0.50 s · link message\n{")
