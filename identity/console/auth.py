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

from ..access import is_loopback

# A support person's working day; after that the signature expires and they sign in again.
SESSION_LIFETIME = timedelta(hours=8)
CSRF_FIELD = "csrf_token"
_KEY_LABEL = b"identity support console session key"


def configured_support_tokens() -> tuple[str, ...]:
    """The tokens of the support role (SPEC §8). The one place the console reads them."""
    return current_app.config["SUPPORT_TOKENS"]


def is_loopback_client() -> bool:
    """SPEC §8: a role without tokens serves 127.0.0.0/8 and ::1 only."""
    return is_loopback(request.remote_addr)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _matching_digest(digest: str) -> bool:
    # Every configured token is compared, each in constant time.
    found = False
    for token in configured_support_tokens():
        found |= hmac.compare_digest(digest, _digest(token))
    return found


def sign_in_required() -> bool:
    return bool(configured_support_tokens())


def sign_in(token: str) -> bool:
    """Start a new session for a valid support token; False (and no session) otherwise."""
    if not _matching_digest(_digest(token)):
        return False
    session.clear()  # a fresh session, so a session fixed before sign-in is worthless
    session.permanent = True
    session["support"] = _digest(token)
    session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return True


def sign_out() -> None:
    session.clear()


def signed_in() -> bool:
    digest = session.get("support")
    return isinstance(digest, str) and _matching_digest(digest)


def token_id() -> str | None:
    """The signed-in token's id as the access log names it: 8 hex digits of its SHA-256."""
    digest = session.get("support")
    return digest[:8] if isinstance(digest, str) else None


def may_use_console() -> bool:
    if sign_in_required():
        return signed_in()
    return is_loopback_client()


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
