"""Parsing DingTalk callback bodies into IncomingMessage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.messages import ContentKind, Media, message_from_json, message_to_json
from api.dingtalk.parse import PayloadError, parse_callback
from tests.fakes.payloads import callback, encode

HOOK = "https://oapi.dingtalk.com/robot/sendBySession?session=1"


def parse(body: dict[str, Any]) -> Any:
    return parse_callback(encode(body))


def test_protocol_sample_one_to_one() -> None:
    m = parse(callback(HOOK, "hello DingTalk!", createAt="1695283635765"))
    assert (m.text, m.kind, m.is_group) == ("hello DingTalk!", ContentKind.TEXT, False)
    assert m.person_id == "ding9f50b15bccd16741:042217062297"
    assert m.created_at_ms == 1695283635765
    assert m.reply_url == HOOK
    assert m.addressed_to_bot


def test_group_text_loses_its_leading_space() -> None:
    m = parse(callback(HOOK, "测试数据", group=True))
    assert m.text == "测试数据"
    assert m.is_group
    assert m.conversation_title == "测试群"


def test_person_falls_back_to_sender_id_without_staff_id() -> None:
    m = parse(callback(HOOK, senderStaffId="", senderCorpId=""))
    assert m.person_id == "$:LWCP_v1:$Y5u1kO0ehyqD3uPHdFmyPA=="
    assert m.sender_staff_id == ""


@pytest.mark.parametrize(
    ("fields", "person"),
    [
        (
            {"senderCorpId": "dingcorp", "senderStaffId": "staff1", "senderId": "$:LWCP_v1:$x=="},
            "dingcorp:staff1",
        ),
        (
            {"senderCorpId": "", "senderStaffId": "staff1", "senderId": "dingcorp:staff1"},
            "$id:dingcorp:staff1",
        ),
        ({"senderCorpId": "a:b", "senderStaffId": "c", "senderId": "$:LWCP_v1:$y=="}, "$:LWCP_v1:$y=="),
        ({"senderCorpId": "$", "senderStaffId": "LWCP_v1:$y==", "senderId": "plain"}, "$id:plain"),
        ({"senderCorpId": "", "senderStaffId": "", "senderId": "$id:x"}, "$id:$id:x"),
    ],
)
def test_person_ids_cannot_collide(fields: dict[str, str], person: str) -> None:
    """A senderId shaped like corp:staff (or like another form) never becomes someone else's id."""
    assert parse(callback(HOOK, **fields)).person_id == person


def test_rich_text_keeps_text_parts_and_drops_leading_mention() -> None:
    parts = [
        {"text": "@小钉 "},
        {"text": "帮我看"},
        {"downloadCode": "d", "type": "picture"},
        {"text": "这个 @张三"},
    ]
    m = parse(callback(HOOK, msgtype="richText", content={"richText": parts}))
    assert m.text == "帮我看这个 @张三"
    assert m.kind is ContentKind.MEDIA
    assert m.media == (Media("picture", "d", at=len("帮我看")),)  # where the picture sat among the words


def test_rich_text_pictures_keep_their_order_and_places() -> None:
    parts = [
        {"downloadCode": "first", "type": "picture"},
        {"text": "  上面是报错，"},
        {"pictureDownloadCode": "second", "type": "picture"},
        {"text": "下面是日志"},
        {"downloadCode": "third", "type": "picture"},
        {"type": "picture"},  # no download code: nothing to fetch, skipped
    ]
    m = parse(callback(HOOK, msgtype="richText", content={"richText": parts}))
    assert m.text == "上面是报错，下面是日志"
    assert [(x.code, x.at) for x in m.media] == [("first", 0), ("second", 6), ("third", 11)]


def test_picture_and_file_messages_carry_their_download_codes() -> None:
    picture = parse(
        callback(HOOK, msgtype="picture", content={"downloadCode": "pic", "pictureDownloadCode": "p2"})
    )
    assert (picture.kind, picture.text, picture.media) == (ContentKind.MEDIA, "", (Media("picture", "pic"),))
    sent = {"fileName": "周报.pdf", "downloadCode": "doc", "spaceId": "1", "fileId": "2"}
    file = parse(callback(HOOK, msgtype="file", content=json.dumps(sent, ensure_ascii=False)))
    assert file.media == (Media("file", "doc", "周报.pdf"),)


def test_media_survive_the_inbox_round_trip() -> None:
    parts = [{"text": "看"}, {"downloadCode": "d", "type": "picture"}]
    m = parse(callback(HOOK, msgtype="richText", content={"richText": parts}))
    assert message_from_json(message_to_json(m)) == m


def test_content_may_be_a_json_string() -> None:
    m = parse(
        callback(HOOK, msgtype="audio", content=json.dumps({"recognition": "明天开会"}, ensure_ascii=False))
    )
    assert (m.text, m.kind) == ("明天开会", ContentKind.TEXT)


@pytest.mark.parametrize(
    "overrides",
    [
        {"msgtype": "picture", "content": {"downloadCode": ""}},
        {"msgtype": "file", "content": {"fileName": "a.pdf"}},
        {"msgtype": "video", "content": {"downloadCode": "v", "duration": "3"}},
        {"msgtype": "audio", "content": {"recognition": ""}},
        {"msgtype": "richText", "content": "not json"},
        {"msgtype": "somethingNew"},
    ],
)
def test_unreadable_types_are_unsupported(overrides: dict[str, Any]) -> None:
    m = parse(callback(HOOK, **overrides))
    assert m.kind is ContentKind.UNSUPPORTED
    assert m.text == ""
    assert m.original_type == overrides["msgtype"]


def test_unknown_fields_are_ignored() -> None:
    assert parse(callback(HOOK, brandNewField={"x": 1})).text == "你好"


def test_integer_conversation_type_is_accepted() -> None:
    assert parse(callback(HOOK, conversationType=2)).is_group


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"conversationType": "3"}, "conversationType"),
        ({"msgId": ""}, "missing field: msgId"),
        ({"senderId": None}, "missing field: senderId"),
        ({"sessionWebhook": ["x"]}, "sessionWebhook must be a string"),
        ({"msgId": True}, "msgId must be a string"),
    ],
)
def test_invalid_fields(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse(callback(HOOK, **overrides))


def test_text_field_of_wrong_shape_is_empty_not_a_crash() -> None:
    body = callback(HOOK)
    body["text"] = "plain string"
    m = parse(body)
    assert m.kind is ContentKind.EMPTY


def test_mention_detection_in_groups() -> None:
    other = callback(HOOK, group=True, isInAtList=False, atUsers=[{"dingtalkId": "$:other"}])
    assert not parse(other).addressed_to_bot
    # without explicit information we answer (custom-robot outgoing may omit the fields)
    assert parse(callback(HOOK, group=True, isInAtList=None, atUsers=None)).addressed_to_bot


@pytest.mark.parametrize("msg_id", ["", "a b", "id\nINFO forged line", "x" * 129, "消息"])
def test_msg_id_must_be_a_short_printable_token(msg_id: str) -> None:
    with pytest.raises(PayloadError, match="msgId"):
        parse(callback(HOOK, msgId=msg_id))


def test_deeply_nested_json_is_a_bad_body_not_a_crash() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_callback(b"[" * 100_000)


def test_lone_surrogates_are_replaced_so_the_reply_can_be_encoded() -> None:
    raw = encode(callback(HOOK, "PLACEHOLDER", senderNick="PLACEHOLDER")).replace(
        b"PLACEHOLDER", b"a\\ud800b"
    )
    m = parse_callback(raw)
    assert m.text == "a\ufffdb"
    assert m.sender_nick == "a\ufffdb"
    m.text.encode("utf-8")


def test_odd_create_at_is_ignored() -> None:
    assert parse(callback(HOOK, createAt="\u00b2")).created_at_ms is None


def test_control_characters_are_removed_from_what_people_wrote() -> None:
    m = parse(callback(HOOK, text="第一行\x00\x07\n第二行\t完"))
    assert m.text == "第一行\n第二行\t完"  # NUL cannot be stored in PostgreSQL, nor mark a picture's place
