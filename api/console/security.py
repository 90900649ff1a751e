"""Who may use the console: the password, a signed session cookie (HttpOnly, SameSite=Strict, expiring),
a CSRF token per session on every form, a lockout after repeated failed logins, CONSOLE_ALLOWED_IPS, and
the security headers of every console response.

The signing key is derived from CONSOLE_PASSWORD: changing the password ends every session, and replicas
with the same password accept each other's sessions. Failed logins are counted per process."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import deque
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from agent.settings.config import Settings

COOKIE = "dingbot_console"
MAX_FAILURES = 5  # failed logins from one address within LOCKOUT_SECONDS lock it out for LOCKOUT_SECONDS
MAX_FAILURES_ANYWHERE = 20  # and from everywhere together (a guess spread over many addresses)
LOCKOUT_SECONDS = 15 * 60
LOGIN_SECONDS = 15 * 60  # how long a login form's session lasts before it is signed in

HEADERS = {
    # no inline script or style, nothing from elsewhere: works offline, and an injected tag never runs
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Session:
    sid: str
    signed_in: bool


class ConsoleGuard:
    def __init__(self, settings: Settings) -> None:
        assert settings.console_password is not None  # the console is only built with a password
        self._password = settings.console_password.get_secret_value().encode()
        key = hmac.new(self._password, b"dingbot console session", hashlib.sha256).digest()
        self._key = key
        self._serializer = URLSafeTimedSerializer(key, salt="dingbot-console")
        self.session_seconds = int(settings.console_session_hours * 3600)
        self._allowed = [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in settings.console_allowed_ips.split(",")
            if part.strip()
        ]
        self._failures: dict[str, deque[float]] = {}
        self._all_failures: deque[float] = deque()

    # --- where from -------------------------------------------------------------------------------

    def allows(self, address: str) -> bool:
        if not self._allowed:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._allowed)

    # --- sessions ---------------------------------------------------------------------------------

    def new_session(self, *, signed_in: bool) -> tuple[Session, str]:
        """A fresh session (a new id: no fixation) and its cookie value."""
        session = Session(secrets.token_urlsafe(18), signed_in)
        return session, self._serializer.dumps({"sid": session.sid, "in": signed_in})

    def session(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.session_seconds)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
            return None
        return Session(data["sid"], bool(data.get("in")))

    def csrf(self, session: Session) -> str:
        return hmac.new(self._key, f"csrf:{session.sid}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf(session), token or "")

    # --- logins -----------------------------------------------------------------------------------

    def locked_for(self, address: str, now: float | None = None) -> float:
        """Seconds until `address` may try again (0: it may)."""
        now = time.monotonic() if now is None else now
        mine = self._prune(self._failures.get(address, deque()), now)
        everyone = self._prune(self._all_failures, now)
        limits = ((mine, MAX_FAILURES), (everyone, MAX_FAILURES_ANYWHERE))
        return max((q[0] + LOCKOUT_SECONDS - now for q, cap in limits if len(q) >= cap), default=0.0)

    def password_ok(self, given: str, address: str, now: float | None = None) -> bool:
        """Check a login; a wrong one counts towards the lockout."""
        if hmac.compare_digest(given.encode(), self._password):
            self._failures.pop(address, None)
            return True
        now = time.monotonic() if now is None else now
        self._failures.setdefault(address, deque()).append(now)
        self._all_failures.append(now)
        return False

    @staticmethod
    def _prune(failures: deque[float], now: float) -> deque[float]:
        while failures and failures[0] <= now - LOCKOUT_SECONDS:
            failures.popleft()
        return failures
