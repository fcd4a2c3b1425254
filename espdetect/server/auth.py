"""Optional authentication: HTTP Basic, bearer tokens and login sessions for the viewer page.

Off unless ``auth_password_hash`` or ``auth_token_hash`` is configured. Then every endpoint
except ``/health``, ``/login`` and ``/logout`` needs one of:

* ``Authorization: Basic`` with ``auth_username`` and the password (for scripts, ffmpeg, VLC);
* ``Authorization: Bearer <token>`` (for a separate front end or Prometheus);
* the session cookie set by the login form. A browser's ``<img>`` cannot send headers, so the
  viewer page logs in once with a form and the MJPEG requests carry an HttpOnly,
  ``SameSite=Strict`` cookie, signed with HMAC-SHA256 and expiring after ``session_max_age``.

Cookies are sent by the browser on its own, so a state-changing request (anything but GET,
HEAD, OPTIONS) authenticated by the cookie must also carry an ``X-Requested-With`` header,
which another site cannot add without a CORS preflight this server refuses
(`espdetect.server.guard` also rejects foreign ``Origin`` headers on such requests).

A browser navigation without credentials is redirected to the login page; any other request
gets 401 with a ``WWW-Authenticate`` challenge. Password checks are deliberately slow (a
PBKDF2/scrypt hash), so they run in worker threads, and a successful check is remembered for a
few minutes so HTTP Basic clients do not pay for it on every request. Credentials are never logged.

Guessing floods are turned away before any hash is computed (429 with ``Retry-After``, see
`PasswordThrottle`): at most ``auth_workers`` hashes run at once and ``auth_queue`` more wait, with
addresses without recent failures going first; each client address has at most one check in
flight, and after ``auth_free_failures`` wrong passwords it backs off for 0.25 s, doubling with
every further failure up to ``auth_backoff_max``. Session cookies, bearer tokens and already
verified Basic credentials never meet these limits. The address is the connection's peer
(``scope["client"]``): there is no trusted-proxy setting, so ``X-Forwarded-For`` is ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from espdetect.server.passwords import verify_password, verify_token
from espdetect.server.settings import AuthSettings, ServerSettings
from espdetect.server.stats import AuthStats
from espdetect.server.throttle import MAX_CLIENTS, AuthThrottled, PasswordThrottle, client_key, cpu_cores

__all__ = [
    "IDENTITY_SCOPE_KEY",
    "PUBLIC_PATHS",
    "SESSION_COOKIE",
    "AuthMiddleware",
    "Authenticator",
    "Identity",
    "SessionSigner",
    "login_router",
    "session_router",
]

logger = logging.getLogger(__name__)

SESSION_COOKIE = "espdetect_session"
#: Where the middleware leaves the `Identity` of an authenticated request.
IDENTITY_SCOPE_KEY = "espdetect.identity"
#: Paths answered without credentials.
PUBLIC_PATHS = frozenset({"/health", "/login", "/logout"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_REALM = 'realm="espdetect"'
_MAX_CREDENTIAL_CHARS = 4096
_MAX_LOGIN_BODY = 16 * 1024
#: Seconds a successful password check is remembered (per user and password).
_VERIFIED_TTL = 300.0
_VERIFIED_MAX = 256
_REVOKED_MAX = 100_000

AuthMethod = Literal["basic", "bearer", "session"]


@dataclass(frozen=True)
class Identity:
    """Who made a request and how they proved it."""

    user: str
    method: AuthMethod


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signed, expiring session cookie values, revocable until they expire.

    The value is ``base64(json) "." base64(HMAC-SHA256(secret, base64(json)))``; the JSON holds
    the user, the expiry (Unix seconds) and a random session id. Logging out records the id
    until the session would have expired anyway.

    Example:
        >>> signer = SessionSigner(b"k" * 32, max_age=60.0)
        >>> value = signer.issue("admin")
        >>> signer.verify(value)
        'admin'
        >>> signer.revoke(value); signer.verify(value) is None
        True
    """

    def __init__(self, secret: bytes, max_age: float, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError(f"expected a session secret of at least 16 bytes, got {len(secret)}")
        self._key = hashlib.sha256(b"espdetect-session\0" + secret).digest()
        self.max_age = max_age
        self._clock = clock
        self._revoked: dict[str, float] = {}

    def _sign(self, payload: str) -> str:
        return _b64e(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, user: str) -> str:
        body = {"u": user, "exp": int(self._clock() + self.max_age), "sid": secrets.token_hex(16)}
        payload = _b64e(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def _claims(self, value: str) -> dict[str, Any] | None:
        payload, dot, signature = value.partition(".")
        if not dot or len(value) > _MAX_CREDENTIAL_CHARS:
            return None
        if not hmac.compare_digest(self._sign(payload).encode("ascii"), signature.encode("ascii", "replace")):
            return None
        try:
            claims = json.loads(_b64d(payload))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("u"), str):
            return None
        if not isinstance(claims.get("exp"), int) or not isinstance(claims.get("sid"), str):
            return None
        return claims

    def verify(self, value: str) -> str | None:
        """The user of a valid, unexpired, not revoked session; None otherwise."""
        claims = self._claims(value)
        if claims is None or claims["exp"] <= self._clock() or claims["sid"] in self._revoked:
            return None
        user: str = claims["u"]
        return user

    def revoke(self, value: str) -> None:
        """End the session of ``value`` (logout); invalid values are ignored."""
        claims = self._claims(value)
        if claims is None:
            return
        now = self._clock()
        if len(self._revoked) >= _REVOKED_MAX or len(self._revoked) % 64 == 0:
            self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
        if len(self._revoked) < _REVOKED_MAX:
            self._revoked[claims["sid"]] = float(claims["exp"])


class Authenticator:
    """Checks credentials against the configured hashes; password checks go through a `PasswordThrottle`.

    Example:
        >>> auth = Authenticator(AuthSettings(auth_token_hash=hash_token("t0ken")))  # doctest: +SKIP
        >>> await auth.authenticate(Headers({"authorization": "Bearer t0ken"}), client="10.0.0.7")
        Identity(user='token', method='bearer')
    """

    def __init__(self, settings: AuthSettings, *, max_clients: int = MAX_CLIENTS) -> None:
        self.username = settings.auth_username
        self._password_hash = (
            settings.auth_password_hash.get_secret_value() if settings.auth_password_hash else None
        )
        self._token_hash = settings.auth_token_hash.get_secret_value() if settings.auth_token_hash else None
        secret = (
            settings.session_secret.get_secret_value().encode("utf-8")
            if settings.session_secret is not None
            else secrets.token_bytes(32)
        )
        self.sessions = SessionSigner(secret, settings.session_max_age)
        self._cache_key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self.throttle = PasswordThrottle(
            settings.auth_workers or cpu_cores(),
            settings.auth_queue,
            settings.auth_free_failures,
            settings.auth_backoff_max,
            max_clients=max_clients,
        )

    @property
    def enabled(self) -> bool:
        return self._password_hash is not None or self._token_hash is not None

    @property
    def schemes(self) -> list[str]:
        """The ``Authorization`` schemes accepted (for ``WWW-Authenticate``)."""
        out = []
        if self._password_hash is not None:
            out.append("Basic")
        if self._token_hash is not None:
            out.append("Bearer")
        return out

    def stats(self) -> AuthStats:
        """Password checks so far and the limits' refusals (``auth`` in ``/stats``)."""
        return self.throttle.stats()

    async def check_password(self, username: str, password: str, client: str | None = None) -> bool:
        """Whether the user name and password match (the hash runs in a worker thread).

        Credentials verified in the last minutes are answered at once, whoever sends them;
        anything else is admitted by the `PasswordThrottle` under ``client``'s address.

        Raises:
            AuthThrottled: refused before hashing (answer 429).
        """
        # Empty passwords are never hashed: `hash_password` refuses them, so none can match.
        if self._password_hash is None or not password or len(password) > _MAX_CREDENTIAL_CHARS:
            return False
        encoded = self._password_hash
        user_ok = hmac.compare_digest(username.encode("utf-8", "replace"), self.username.encode("utf-8"))
        pair = username.encode("utf-8", "replace") + b"\0" + password.encode("utf-8", "replace")
        key = hmac.new(self._cache_key, pair, hashlib.sha256).digest()
        expiry = self._verified.get(key)
        if expiry is not None and expiry > time.monotonic():
            return True

        def verify() -> bool:
            # The hash runs for a wrong user name too, so its timing does not tell the name.
            return verify_password(password, encoded) and user_ok

        ok = await self.throttle.check(client_key(client), key, verify)
        if ok:
            self._verified[key] = time.monotonic() + _VERIFIED_TTL
            self._verified.move_to_end(key)
            while len(self._verified) > _VERIFIED_MAX:
                self._verified.popitem(last=False)
            return True
        return False

    def check_token(self, token: str) -> bool:
        if self._token_hash is None or not token or len(token) > _MAX_CREDENTIAL_CHARS:
            return False
        return verify_token(token, self._token_hash)

    async def check_login(self, username: str, password: str, client: str | None = None) -> str | None:
        """The user a login form's fields authenticate (the token also works as password).

        Raises:
            AuthThrottled: a password check refused before hashing (answer 429).
        """
        # The token first: it costs nothing, so it never waits behind password checks.
        if self.check_token(password):
            return "token"
        if self._password_hash is not None and await self.check_password(username, password, client):
            return self.username
        return None

    async def authenticate(self, headers: Headers, client: str | None = None) -> Identity | None:
        """The identity proven by ``headers`` from peer address ``client``, or None (a wrong
        Authorization header is never overridden by a cookie).

        Raises:
            AuthThrottled: new Basic credentials refused before hashing (answer 429).
        """
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(" ")
            scheme = scheme.lower()
            credentials = credentials.strip()
            if scheme == "bearer":
                return Identity("token", "bearer") if self.check_token(credentials) else None
            if scheme == "basic" and len(credentials) <= _MAX_CREDENTIAL_CHARS:
                try:
                    decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    return None
                user, sep, password = decoded.partition(":")
                if sep and await self.check_password(user, password, client):
                    return Identity(self.username, "basic")
            return None
        cookie = _cookie(headers, SESSION_COOKIE)
        session_user = self.sessions.verify(cookie) if cookie is not None else None
        return Identity(session_user, "session") if session_user is not None else None


def _cookie(headers: Headers, name: str) -> str | None:
    # Parsed by hand: a malformed Cookie header from a hostile client must not raise.
    for header in headers.getlist("cookie"):
        for item in header.split(";"):
            key, sep, value = item.strip().partition("=")
            if sep and key == name:
                return value.strip().strip('"')
    return None


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class AuthMiddleware:
    """ASGI middleware that lets only authenticated requests through (except `PUBLIC_PATHS`).

    Pure ASGI rather than ``BaseHTTPMiddleware`` so MJPEG streams pass through untouched.

    Example:
        >>> app.add_middleware(AuthMiddleware, authenticator=Authenticator(settings))  # doctest: +SKIP
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        peer = scope.get("client")
        try:
            identity = await self.auth.authenticate(headers, peer[0] if peer else None)
        except AuthThrottled as exc:
            await _json(429, str(exc), exc.headers)(scope, receive, send)
            return
        if identity is None:
            await self._challenge(scope, headers)(scope, receive, send)
            return
        if (
            identity.method == "session"
            and scope["method"] not in SAFE_METHODS
            and not headers.get("x-requested-with")
        ):
            response = _json(
                403,
                "expected an X-Requested-With header on a state-changing request authenticated by "
                "the session cookie (CSRF protection), got none",
            )
            await response(scope, receive, send)
            return
        scope[IDENTITY_SCOPE_KEY] = identity
        await self.app(scope, receive, send)

    def _challenge(self, scope: Scope, headers: Headers) -> Response:
        accept = headers.get("accept", "")
        if scope["method"] in ("GET", "HEAD") and "text/html" in accept:
            target = scope["path"] + (
                "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
            )
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        if headers.get("x-requested-with"):
            # Scripts of the viewer page: a Basic challenge would make the browser show its own
            # password dialog instead of letting the page send the user to the login form.
            challenges = [f"Session {_REALM}"]
        else:
            challenges = [f"{scheme} {_REALM}" for scheme in self.auth.schemes]
        response = _json(
            401,
            "expected credentials: log in at /login (session cookie), HTTP Basic or a bearer token, "
            "got none or wrong ones",
        )
        for challenge in challenges:
            response.headers.append("WWW-Authenticate", challenge)
        return response


# -- routes ---------------------------------------------------------------------------------------

session_router = APIRouter()
login_router = APIRouter()


def _authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.authenticator
    return auth


@session_router.get("/session")
async def session(request: Request) -> dict[str, Any]:
    """Whether authentication is on, and who the caller is."""
    identity: Identity | None = request.scope.get(IDENTITY_SCOPE_KEY)
    settings: ServerSettings = request.app.state.settings
    return {
        "auth_required": settings.auth.enabled,
        "user": identity.user if identity else None,
        "method": identity.method if identity else None,
        "camera_control": settings.camera_control_enabled,
    }


@login_router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page() -> HTMLResponse:
    page = resources.files("espdetect.server").joinpath("static/login.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def _safe_next(value: str | None) -> str:
    """A local path to go to after logging in (never another site: no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value):
        return "/"
    return value


async def _read_login(request: Request) -> tuple[dict[str, str], bool]:
    """The submitted fields and whether they came as JSON (else a form)."""
    body = await request.body()
    if len(body) > _MAX_LOGIN_BODY:
        return {}, False
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            return {}, True
        if not isinstance(data, dict):
            return {}, True
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}, True
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=10)
    return {k: v[0] for k, v in fields.items() if v}, False


@login_router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Check the form's (or JSON's) username and password; set the session cookie."""
    auth = _authenticator(request)
    fields, as_json = await _read_login(request)
    target = _safe_next(fields.get("next"))
    peer = request.client.host if request.client else None
    try:
        user = await auth.check_login(fields.get("username", ""), fields.get("password", ""), peer)
    except AuthThrottled as exc:
        if as_json:
            return _json(429, str(exc), exc.headers)
        # The form's page would call this a wrong password; say what happened instead.
        text = f"Too many login attempts: try again in {exc.retry_after} s."
        page = f'<!doctype html><meta charset="utf-8"><p>{text}</p><p><a href="/login">Log in</a></p>'
        return HTMLResponse(page, status_code=429, headers={**exc.headers, "Cache-Control": "no-store"})
    if user is None:
        logger.warning("failed login from %s", peer or "unknown")
        if as_json:
            return _json(401, "expected a valid username and password, got wrong ones")
        return RedirectResponse(f"/login?error=1&next={quote(target, safe='')}", status_code=303)
    logger.info("%s logged in from %s", user, peer or "unknown")
    response: Response = (
        JSONResponse({"user": user}) if as_json else RedirectResponse(target, status_code=303)
    )
    response.set_cookie(
        SESSION_COOKIE,
        auth.sessions.issue(user),
        max_age=int(auth.sessions.max_age),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@login_router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    """End the session (the cookie stops working at once, also if someone kept a copy)."""
    auth = _authenticator(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        auth.sessions.revoke(cookie)
    wants_html = "text/html" in request.headers.get("accept", "") and not request.headers.get(
        "x-requested-with"
    )
    response: Response = (
        RedirectResponse("/login", status_code=303) if wants_html else JSONResponse({"detail": "logged out"})
    )
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
