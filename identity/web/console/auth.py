"""Who may use the console, and the signed session cookie that remembers a sign-in.

The console belongs to the `support` role. With support tokens configured, a person signs
in once with a token; the session then holds the token's SHA-256 digest (never the token
itself, so a copied cookie does not leak a bearer token for the API) and stays valid while
that token is still configured. With no support token configured, the console serves
loopback clients only, without sign-in.

Every form that changes state carries a CSRF token: a random value kept in the session
(synchronizer token). The session cookie is signed, so a forged page cannot know it.
"""

import hashlib
import hmac
import secrets
from datetime import timedelta

from flask import Flask, current_app, request, session
from flask.sessions import SecureCookieSessionInterface

# A support person's working day; after that the signature expires and they sign in again.
SESSION_LIFETIME = timedelta(hours=8)
CSRF_FIELD = "csrf_token"
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


def sign_in(token: str) -> bool:
    """Start a new session for a valid support token; False (and no session) otherwise."""
    if _support_token(_digest(token)) is None:
        return False
    session.clear()  # a fresh session, so a session fixed before sign-in is worthless
    session.permanent = True
    session["support"] = _digest(token)
    session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return True


def sign_out() -> None:
    session.clear()


def session_token_digest() -> str | None:
    """The proof access.py accepts for console pages: the signed-in token's digest."""
    return session.get("support")


def signed_in() -> bool:
    return _support_token(session.get("support")) is not None


def token_id() -> str | None:
    """The signed-in token's id as the access log names it: 8 hex digits of its SHA-256."""
    token = _support_token(session.get("support"))
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
    """Flask's signed cookie, marked Secure whenever the request itself came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or request.is_secure


def configure_session(app: Flask) -> None:
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = derived_secret_key(app.config)
    app.config.update(
        SESSION_COOKIE_NAME="console_session",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.session_interface = ConsoleSessionInterface()
