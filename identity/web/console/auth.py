"""Who may use the console, and the signed session cookie that remembers a sign-in.

The console belongs to the `support` role. With support tokens configured, a person signs
in once with a token. The server then keeps the session (sessions.py): a row with the
token's SHA-256 digest (never the token itself, so neither the table nor a copied cookie
leaks a bearer token for the API) and the time of sign-in. The browser's signed cookie
holds only a random key that names the row. The session lasts while the row does, and
that token is still configured, and at most SESSION_LIFETIME from sign-in whatever its use
(the cookie is not renewed on each request); sign-out deletes the row, which ends the
session for every copy of the cookie. With no support token configured, the console
serves loopback clients only, without sign-in, and keeps no session rows.

Every form that changes state carries a CSRF token: a random value kept in the session
(synchronizer token). The session cookie is signed, so a forged page cannot know it.
"""

import hashlib
import hmac
import secrets
from datetime import timedelta

from flask import Flask, Request, Response, current_app, g, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin

from identity.database.connections import run_unit

from . import sessions

# A support person's working day, from sign-in; after that they sign in again.
SESSION_LIFETIME = timedelta(hours=8)
CSRF_FIELD = "csrf_token"
# The cookie's member holding the random key that names the session's row.
SESSION_KEY = "session_key"
_KEY_LABEL = b"identity support console session key"


def _support_token(digest_hex: str | None):
    """The configured support token of this digest (SPEC §8), compared in constant time."""
    if not isinstance(digest_hex, str):
        return None
    try:
        token = current_app.extensions["identity_access"].find_digest(bytes.fromhex(digest_hex))
    except ValueError:
        return None
    return token if token is not None and token.role == "support" else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in_required() -> bool:
    """With no support token configured, access.py serves loopback clients only instead."""
    return bool(current_app.extensions["identity_access"].ids("support"))


def _session_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def sign_in(token: str) -> bool:
    """Start a new session for a valid support token; False (and no session) otherwise."""
    digest = _digest(token)
    if _support_token(digest) is None:
        return False
    key = secrets.token_urlsafe(32)
    run_unit(
        lambda conn: sessions.open_session(conn, _session_id(key), digest, SESSION_LIFETIME)
    )
    session.clear()  # a fresh session, so a session fixed before sign-in is worthless
    session.permanent = True
    session[SESSION_KEY] = key
    session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return True


def sign_out() -> None:
    """End the session on the server, for every copy of its cookie."""
    key = session.get(SESSION_KEY)
    if isinstance(key, str):
        run_unit(lambda conn: sessions.end_session(conn, _session_id(key)))
    session.clear()


def session_token_digest() -> str | None:
    """The proof access.py accepts for console pages: the digest of the token a live
    session was opened with, looked up once per request."""
    if "console_token_digest" not in g:
        g.console_token_digest = _live_token_digest()
    return g.console_token_digest


def _live_token_digest() -> str | None:
    key = session.get(SESSION_KEY)
    if not isinstance(key, str) or not sign_in_required():
        return None
    return run_unit(
        lambda conn: sessions.live_token_digest(conn, _session_id(key), SESSION_LIFETIME)
    )


def signed_in() -> bool:
    return _support_token(session_token_digest()) is not None


def token_id() -> str | None:
    """The signed-in token's id as the access log names it: 8 hex digits of its SHA-256."""
    token = _support_token(session_token_digest())
    return token.id if token else None


def csrf_token() -> str:
    """The session's CSRF token, created on first use (templates call this)."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def csrf_valid() -> bool:
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD, "")
    return isinstance(expected, str) and hmac.compare_digest(expected.encode(), given.encode())


def derived_secret_key(config) -> str:
    """A session key for a deployment that sets no SECRET_KEY.

    Every worker process of one deployment has the same support tokens and DATABASE_URL,
    so each derives the same key and a session signed by one is valid on all. Whoever can
    compute it already holds a support token (and could simply sign in) or, with no token
    configured, the database's address, which grants more than the console does; the
    session then only carries a CSRF token, since access is decided by the client's
    address. Changing the tokens changes the key and ends every session.
    """
    material = "\n".join(sorted(config["SUPPORT_TOKENS"])) + "\0" + config["DATABASE_URL"]
    return hmac.new(_KEY_LABEL, material.encode(), hashlib.sha256).hexdigest()


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request itself came over HTTPS.

    The API's requests carry no cookie (it is sent to /console only) and never touch the
    session: for them, nothing is parsed, built or sent (Flask would build a signing
    serializer at every request: about 50 µs of its CPU time)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or request.is_secure

    def open_session(self, app: Flask, incoming: Request) -> SecureCookieSession | None:
        has_cookies = "HTTP_COOKIE" in incoming.environ
        if not has_cookies or self.get_cookie_name(app) not in incoming.cookies:
            return self.session_class()
        return super().open_session(app, incoming)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if session or session.modified or session.accessed:
            super().save_session(app, session, response)


def configure_session(app: Flask) -> None:
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = derived_secret_key(app.config)
    app.config.update(
        SESSION_COOKIE_NAME="console_session",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # The cookie's expiry counts from sign-in: it is sent again only when it changes.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.session_interface = ConsoleSessionInterface()
