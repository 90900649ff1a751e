"""`dingbot simulate`: the callback DingTalk would send — a text, picture, rich-text or file message —
and the files it serves for it."""

from __future__ import annotations

import argparse
import base64
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

from dingbot.simulate_webhook import EXIT_SETUP, SimulateError

DEFAULT_USER = "sim-user"  # a fixed sender: memory and history carry over between runs
DEFAULT_NICK = "模拟用户"
BOT_USER_ID = "$:LWCP_v1:$dingbotSimulateRobot="  # chatbotUserId: whom a group message @-mentions
DEFAULT_ROBOT_CODE = "dingsimulaterobot"
DEFAULT_CORP_ID = "dingsimulatecorp"
SESSION_MINUTES = 90  # DingTalk's session webhooks live about 90 minutes


def _digest(kind: str, value: str) -> str:
    """A stable DingTalk-looking id part (base64, like cid…== and $:LWCP_v1:$…==)."""
    return base64.b64encode(hashlib.sha256(f"{kind}:{value}".encode()).digest()).decode()[:22]


def conversation_id_for(user: str, group: str | None) -> str:
    """Stable per group name, or per sender for a one-to-one chat: history and overrides carry over."""
    return f"cid{_digest('group', group)}==" if group is not None else f"cid{_digest('direct', user)}=="


def build_callback(
    text: str,
    *,
    webhook: str,
    user: str = DEFAULT_USER,
    nick: str = DEFAULT_NICK,
    group: str | None = None,
    conversation_id: str | None = None,
    robot_code: str = DEFAULT_ROBOT_CODE,
    corp_id: str = DEFAULT_CORP_ID,
    now_ms: int | None = None,
    pictures: list[str] | None = None,
    file: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A message as DingTalk's robot callback carries it: one-to-one, or a group @-mentioning the bot.
    `pictures` (download codes) make it a picture or rich-text message; `file` (name, code) a file."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    body: dict[str, Any] = {
        "conversationId": conversation_id or conversation_id_for(user, group),
        "chatbotCorpId": corp_id,
        "chatbotUserId": BOT_USER_ID,
        "msgId": f"msgSim{uuid.uuid4().hex[:20]}==",
        "senderNick": nick,
        "isAdmin": False,
        "senderStaffId": user,
        "sessionWebhookExpiredTime": now + SESSION_MINUTES * 60 * 1000,
        "createAt": now,
        "senderCorpId": corp_id,
        "conversationType": "2" if group is not None else "1",
        "senderId": f"$:LWCP_v1:${_digest('sender', user)}==",
        "sessionWebhook": webhook,
        "robotCode": robot_code,
        "msgtype": "text",
        # In groups DingTalk removes the @bot part but keeps the space after it.
        "text": {"content": f" {text}" if group is not None else text},
        "isInAtList": group is not None,
    }
    if group is not None:
        body["conversationTitle"] = group
        body["atUsers"] = [{"dingtalkId": BOT_USER_ID}]
    if file is not None:
        del body["text"]
        body.update(msgtype="file", content={"fileName": file[0], "downloadCode": file[1]})
    elif pictures and not text:
        del body["text"]
        body.update(msgtype="picture", content={"downloadCode": pictures[0]})
    elif pictures:
        del body["text"]
        parts = [{"text": text}] + [{"downloadCode": code, "type": "picture"} for code in pictures]
        body.update(msgtype="richText", content={"richText": parts})
    return body


def attachments(args: argparse.Namespace) -> tuple[dict[str, bytes], list[str], tuple[str, str] | None]:
    """The files to serve (code → bytes), the pictures' codes and the file's (name, code)."""
    if args.file and (args.text or args.image):
        raise SimulateError(
            "DingTalk sends a file on its own, without words or pictures: send the file, then ask about it "
            "in the next simulate (the bot keeps it for FILE_CONTEXT_MINUTES)",
            EXIT_SETUP,
        )
    if not (args.text or args.image or args.file):
        raise SimulateError('say something: simulate "text", or --image PATH / --file PATH', EXIT_SETUP)
    served: dict[str, bytes] = {}
    for number, path in enumerate([*args.image, *([args.file] if args.file else [])]):
        try:
            served[f"sim{number}{uuid.uuid4().hex[:12]}"] = Path(path).read_bytes()
        except OSError as exc:
            raise SimulateError(f"cannot read {path}: {exc.strerror or exc}", EXIT_SETUP) from None
    codes = list(served)
    file = (Path(args.file).name, codes[-1]) if args.file else None
    return served, codes[: len(args.image)], file
