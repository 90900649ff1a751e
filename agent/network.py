"""What went wrong on the way to a server (a model endpoint, an embeddings endpoint, a vector server):
the host name does not resolve, nothing listens, TLS failed, no answer in time. Named in English and
Chinese, with the fix for that cause, so no failure ends in one generic hint."""

from __future__ import annotations

import enum
import errno
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit


class Reason(enum.StrEnum):
    DNS = "dns"  # the host name does not resolve
    REFUSED = "refused"  # the host answers, nothing listens on the port
    UNREACHABLE = "unreachable"  # no route to the host / network down
    TLS = "tls"  # the TLS handshake or certificate failed
    TIMEOUT = "timeout"  # no answer in time
    RESET = "reset"  # the connection was dropped midway
    OTHER = "other"


@dataclass(frozen=True)
class TransportFailure:
    reason: Reason
    target: str  # host:port, safe to show
    detail: str  # English, for the log
    detail_zh: str
    fix: str
    fix_zh: str


def exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything it was raised from (httpx and openai wrap the socket error)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 12:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _reason(exc: BaseException) -> Reason:
    import httpx

    chain = exception_chain(exc)
    for item in chain:
        text = str(item).lower()
        if (
            isinstance(item, socket.gaierror)
            or "name or service not known" in text
            or ("temporary failure in name resolution" in text or "nodename nor servname" in text)
        ):
            return Reason.DNS
        if isinstance(item, ConnectionRefusedError) or "connection refused" in text:
            return Reason.REFUSED
        if isinstance(item, ssl.SSLError) or "certificate verify failed" in text:
            return Reason.TLS
        if isinstance(item, OSError) and item.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return Reason.UNREACHABLE
    for item in chain:
        if isinstance(item, TimeoutError | httpx.TimeoutException) or type(item).__name__.endswith("Timeout"):
            return Reason.TIMEOUT
        if isinstance(item, ConnectionResetError | httpx.RemoteProtocolError | httpx.ReadError):
            return Reason.RESET
    return Reason.OTHER


def target_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = 0
    return parts.hostname or "?", port


def describe_failure(exc: BaseException, url: str, setting: str) -> TransportFailure:
    """Why a request to `url` (configured by the setting named `setting`) failed, and what to do."""
    host, port = target_of(url)
    target = f"{host}:{port}"
    reason = _reason(exc)
    if reason is Reason.DNS:
        return TransportFailure(
            reason,
            target,
            f"the host name {host!r} does not resolve (DNS)",
            f"域名 {host!r} 无法解析（DNS）",
            f"check the host name in {setting} for typos, and this machine's DNS and proxy settings",
            f"检查 {setting} 中的主机名是否拼错，以及本机的 DNS 和代理设置",
        )
    if reason is Reason.REFUSED:
        return TransportFailure(
            reason,
            target,
            f"connection refused by {target}: nothing listens there",
            f"{target} 拒绝连接：该端口没有服务在监听",
            f"start the server at {target}, or correct the port in {setting}",
            f"启动 {target} 上的服务，或改正 {setting} 中的端口",
        )
    if reason is Reason.UNREACHABLE:
        return TransportFailure(
            reason,
            target,
            f"{host} is unreachable from this machine (no route)",
            f"本机无法到达 {host}（没有路由）",
            f"check this machine's network, firewall and proxy for {host}",
            f"检查本机到 {host} 的网络、防火墙和代理",
        )
    if reason is Reason.TLS:
        return TransportFailure(
            reason,
            target,
            f"the TLS handshake with {target} failed (certificate or protocol)",
            f"与 {target} 的 TLS 握手失败（证书或协议）",
            f"use http:// in {setting} if the server has no TLS, or install its certificate authority",
            f"若服务没有启用 TLS，{setting} 请用 http://；否则安装其证书颁发机构",
        )
    if reason is Reason.TIMEOUT:
        return TransportFailure(
            reason,
            target,
            f"{target} did not answer in time",
            f"{target} 没有及时应答",
            f"check that the server at {target} is up and not overloaded",
            f"检查 {target} 上的服务是否在运行、是否过载",
        )
    if reason is Reason.RESET:
        return TransportFailure(
            reason,
            target,
            f"{target} dropped the connection",
            f"{target} 中断了连接",
            f"check the server at {target} and any proxy in between",
            f"检查 {target} 上的服务及中间的代理",
        )
    return TransportFailure(
        reason,
        target,
        f"could not connect to {target} ({type(exc).__name__})",
        f"无法连接到 {target}（{type(exc).__name__}）",
        f"check {setting} and that the server is running and reachable from this machine",
        f"检查 {setting}，以及服务是否在运行、本机能否访问",
    )
