"""`dingbot doctor`'s DingTalk checks: callbacks can be verified, the custom-robot webhook accepts a signed
message (only when asked: it posts to the group), the app credentials get an access token.

Through the service's own senders (RobotWebhookSender, AccessTokens). Secrets, tokens and webhook URLs
are never shown: at most a secret's last 4 characters.
"""

from __future__ import annotations

import time

import httpx

from agent.diagnostics.checks import Check, mask, ms, new_check
from agent.settings.config import Settings
from api.dingtalk.openapi import AccessTokens, TokenError
from api.dingtalk.robot_webhook import RobotWebhookSender, notice_body
from api.dingtalk.sender import SendResult
from api.dingtalk.stream_frames import GatewayError, local_ip, open_connection, safe_url

TEST_MESSAGE = "DingHook doctor：机器人 Webhook 测试消息 / robot webhook test message"
_TOKEN_ERRCODES = frozenset({300001, 300005, 400101})  # "token is not exist" and kin on /robot/send


def check_secret(settings: Settings) -> Check:
    check = new_check("dingtalk.secret", "callback signing secret set", "回调签名密钥已设置")
    if settings.secret is not None:
        check.detail = f"SECRET {mask(settings.secret.get_secret_value())}"
    elif settings.dingtalk_client_secret is not None:
        check.detail = "SECRET unset: DINGTALK_CLIENT_SECRET verifies callbacks"
    elif settings.dingtalk_outgoing_token is not None:
        check.detail = "DINGTALK_OUTGOING_TOKEN set: callbacks are authenticated by their token header"
    elif settings.mock_mode:
        check.warned(
            "no SECRET: unsigned callbacks are accepted because mock mode is on",
            "没有设置 SECRET：因为处于 Mock 模式，未签名的回调也会被接受",
            "set SECRET to the robot's signing secret before exposing this service",
            "在服务对外开放前，把 SECRET 设为机器人的签名密钥",
        )
    else:
        check.failed(
            "no SECRET (nor DINGTALK_CLIENT_SECRET / DINGTALK_OUTGOING_TOKEN): every callback is "
            "refused with 401",
            "没有设置 SECRET（也没有 DINGTALK_CLIENT_SECRET / DINGTALK_OUTGOING_TOKEN）："
            "所有回调都会被 401 拒绝",
            "set SECRET to the robot's signing secret (custom robot: Security settings → Additional "
            "signature, SEC...; app robot: its AppSecret)",
            "把 SECRET 设为机器人的签名密钥（自定义机器人：安全设置 → 加签，SEC 开头；"
            "应用机器人：AppSecret）",
        )
    return check


async def check_robot_webhook(settings: Settings, http: httpx.AsyncClient, *, send: bool) -> Check:
    check = new_check(
        "dingtalk.robot", "robot webhook accepts a signed message", "机器人 Webhook 接受签名消息"
    )
    if settings.access_token is None:
        return check.skipped(
            "ACCESS_TOKEN is not set: no proactive notices (dingbot notify)",
            "没有设置 ACCESS_TOKEN：不发送主动通知（dingbot notify）",
        )
    secret = settings.dingtalk_robot_secret or settings.secret
    if not send:
        return check.skipped(
            "not checked: it posts a test message to the robot's group; run with --send-test-message",
            "未检查：该检查会向机器人所在群发送一条测试消息；加 --send-test-message 运行",
        )
    sender = RobotWebhookSender(
        http, oapi_base=settings.dingtalk_oapi_base, access_token=settings.access_token, secret=secret
    )
    started = time.perf_counter()
    result = await sender.send(notice_body(TEST_MESSAGE))
    check.elapsed_ms = ms(started)
    signed = "signed" if secret is not None else "unsigned (no SECRET / DINGTALK_ROBOT_SECRET)"
    if result.ok:
        check.detail = f"{signed} test message accepted (errcode 0) in {check.elapsed_ms:.0f} ms"
        return check
    return _robot_refusal(check, result, signed=secret is not None)


def _robot_refusal(check: Check, result: SendResult, *, signed: bool) -> Check:
    cause = f"DingTalk refused the test message: {result.detail}"
    cause_zh = f"钉钉拒绝了测试消息：{result.detail}"
    if result.errcode in _TOKEN_ERRCODES:
        return check.failed(
            cause,
            cause_zh,
            "ACCESS_TOKEN is not this robot's token: copy the access_token=... part of its webhook URL",
            "ACCESS_TOKEN 不是该机器人的令牌：复制其 Webhook 地址中 access_token= 后面的部分",
        )
    if result.errcode == 310000:
        where = "" if signed else " (nothing was signed: set SECRET or DINGTALK_ROBOT_SECRET)"
        return check.failed(
            cause,
            cause_zh,
            "the robot's security settings refused it: with Additional signature, set DINGTALK_ROBOT_SECRET "
            f"(or SECRET) to the SEC... secret shown there{where}; with keywords, a notice must contain one; "
            "with an IP whitelist, add this server's public IP",
            "机器人的安全设置拒绝了消息：若启用“加签”，"
            "把 DINGTALK_ROBOT_SECRET（或 SECRET）设为那里显示的 SEC 开头密钥"
            + ("（本次未签名）" if not signed else "")
            + "；若启用“自定义关键词”，消息须包含关键词；若启用“IP 地址段”，加入本服务器的公网 IP",
        )
    if result.errcode is None and not result.status:
        return check.failed(
            cause,
            cause_zh,
            "check DINGTALK_OAPI_BASE and that this machine reaches it (proxy, firewall)",
            "检查 DINGTALK_OAPI_BASE，以及本机能否访问它（代理、防火墙）",
        )
    return check.failed(cause, cause_zh, "see DingTalk's error code list", "参见钉钉的错误码说明")


async def check_app_token(settings: Settings, http: httpx.AsyncClient) -> Check:
    check = new_check("dingtalk.app", "app credentials get an access token", "应用凭证可获取 access token")
    client_id, client_secret = settings.dingtalk_client_id, settings.dingtalk_client_secret
    if client_id is None and client_secret is None:
        return check.skipped(
            "DINGTALK_CLIENT_ID / DINGTALK_CLIENT_SECRET not set: no OpenAPI sends (fallback for expired "
            "session webhooks)",
            "没有设置 DINGTALK_CLIENT_ID / DINGTALK_CLIENT_SECRET："
            "不使用 OpenAPI 发送（会话 Webhook 过期时的后备）",
        )
    if client_id is None or client_secret is None:
        missing = "DINGTALK_CLIENT_ID" if client_id is None else "DINGTALK_CLIENT_SECRET"
        return check.failed(
            f"{missing} is not set: the app credentials need both",
            f"没有设置 {missing}：应用凭证两项都需要",
            "set DINGTALK_CLIENT_ID (AppKey) and DINGTALK_CLIENT_SECRET (AppSecret) from the developer "
            "console",
            "在开发者后台找到 AppKey 和 AppSecret，分别设为 DINGTALK_CLIENT_ID 和 DINGTALK_CLIENT_SECRET",
        )
    tokens = AccessTokens(
        http, api_base=settings.dingtalk_api_base, client_id=client_id, client_secret=client_secret
    )
    started = time.perf_counter()
    try:
        await tokens.get()  # never shown
    except TokenError as exc:
        check.elapsed_ms = ms(started)
        if exc.retryable:
            return check.failed(
                str(exc),
                f"获取 access token 失败：{exc}",
                "check DINGTALK_API_BASE and that this machine reaches it (proxy, firewall); retry later",
                "检查 DINGTALK_API_BASE 以及本机能否访问它（代理、防火墙）；稍后重试",
            )
        return check.failed(
            str(exc),
            f"钉钉拒绝发放 access token：{exc}",
            "check DINGTALK_CLIENT_ID (AppKey) and DINGTALK_CLIENT_SECRET (AppSecret) in the developer "
            "console (app → Credentials & basic info)",
            "在开发者后台（应用 → 凭证与基础信息）核对 DINGTALK_CLIENT_ID（AppKey）"
            "和 DINGTALK_CLIENT_SECRET（AppSecret）",
        )
    check.elapsed_ms = ms(started)
    check.detail = f"AppKey {client_id}: token issued in {check.elapsed_ms:.0f} ms"
    return check


async def check_stream_gateway(settings: Settings, http: httpx.AsyncClient) -> Check:
    """DINGTALK_MODE=stream|both: the gateway hands out a connection for the app's credentials.
    Only the HTTP step (connections/open): the single-use ticket is never used, no message is taken."""
    check = new_check("dingtalk.stream", "Stream gateway opens a connection", "Stream 网关可建立连接")
    if not settings.uses_stream:
        return check.skipped(
            "DINGTALK_MODE=http: messages come as HTTP callbacks", "DINGTALK_MODE=http：消息以 HTTP 回调到达"
        )
    if not (settings.dingtalk_client_id and settings.dingtalk_client_secret):
        return check.failed(
            "Stream mode needs DINGTALK_CLIENT_ID and DINGTALK_CLIENT_SECRET",
            "Stream 模式需要 DINGTALK_CLIENT_ID 和 DINGTALK_CLIENT_SECRET",
            "set the app's AppKey and AppSecret, or DINGTALK_MODE=http",
            "设置应用的 AppKey 和 AppSecret，或改用 DINGTALK_MODE=http",
        )
    started = time.perf_counter()
    try:
        ticket = await open_connection(
            http,
            api_base=settings.dingtalk_api_base,
            client_id=settings.dingtalk_client_id,
            client_secret=settings.dingtalk_client_secret.get_secret_value(),
            user_agent="dinghook-doctor",
            local_address=local_ip(settings.dingtalk_api_base),
            request_seconds=10.0,
        )
    except GatewayError as exc:
        check.elapsed_ms = ms(started)
        if exc.kind == "network":
            return check.failed(
                str(exc),
                f"连不上钉钉 Stream 网关：{exc}",
                f"check that this machine reaches {settings.dingtalk_api_base} (DNS, proxy, firewall); "
                "DINGTALK_API_BASE is the gateway's host",
                f"确认本机能访问 {settings.dingtalk_api_base}（DNS、代理、防火墙）；"
                "DINGTALK_API_BASE 是网关的地址",
            )
        return check.failed(
            str(exc),
            f"钉钉 Stream 网关没有给出连接：{exc}",
            "check the AppKey/AppSecret, that the app's robot receives messages in Stream mode "
            "(developer console → robot → message receiving mode), and that this machine reaches "
            "DINGTALK_API_BASE",
            "核对 AppKey/AppSecret；在开发者后台把机器人的消息接收模式设为 Stream 模式；"
            "确认本机能访问 DINGTALK_API_BASE",
        )
    check.elapsed_ms = ms(started)
    check.detail = f"endpoint {safe_url(ticket.endpoint)} in {check.elapsed_ms:.0f} ms"
    return check


async def dingtalk_checks(
    settings: Settings, *, send_test_message: bool, seconds: float = 10.0
) -> list[Check]:
    checks = [check_secret(settings)]
    async with httpx.AsyncClient(timeout=httpx.Timeout(seconds, connect=5.0)) as http:
        checks.append(await check_robot_webhook(settings, http, send=send_test_message))
        checks.append(await check_app_token(settings, http))
        checks.append(await check_stream_gateway(settings, http))
    return checks
