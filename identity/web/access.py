"""Who may call which route: roles, bearer tokens and loopback-only defaults.

Every view declares its role with a decorator, under its route decorator:

    @bp.get("/contacts/<int:contact_id>")
    @access.role("support")
    def contact(contact_id): ...

    @bp.get("/healthz")
    @access.open_route
    def healthz(): ...

An endpoint whose view is not ours to decorate (a blueprint's `static` files) is declared
with `access.declare(app, "console.static", access.OPEN)`. Pages a browser signs in to
name a `proof` (see `role`), and a blueprint may answer a refusal its own way with an
error handler for `AccessDenied`.

A `before_request` hook decides every request before its view runs, and so before the
body is read or validated. A route that declares nothing is refused (fail closed), and the
tests fail on any route without a declaration. For a route of role R:

- `Authorization: Bearer <token>` with a token of R: allowed.
- a token of another role: 403 `forbidden`; any other credential: 401 `unauthorized`.
- no credential: allowed when R has no token configured and the client is on a loopback
  address, so that `make run` and curl work out of the box; otherwise 401. A request a
  proxy relayed is not a loopback client unless that proxy is trusted and names the
  client (see `_local_client`): a proxy on the same machine would otherwise make every
  client of the Internet look local.

Before all that, the `Host` header must name this service (`ALLOWED_HOSTS`, by default
the loopback names and the address it listens on): otherwise a web page could rebind its
own domain name to 127.0.0.1 and read a loopback-only service from a browser (400).
Answers of every route that is not open carry `Cache-Control: no-store`: they hold
personal data, which no browser or proxy cache may keep.

Tokens are kept and compared as SHA-256 digests, each presented token against every
configured one with `hmac.compare_digest`, so the time taken says nothing about how close a
guess came or which token matched. A token's id is the first 8 hex digits of its digest:
the access log names it, never the token.
"""

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from flask import Flask, current_app, g, request

from .errors import ApiError

ROLES = ("checkout", "support", "feed")
OPEN = "open"
SETTINGS = {role: f"{role.upper()}_TOKENS" for role in ROLES}
# A short token is guessable from its id in the logs (8 hex digits of its digest).
MIN_TOKEN_LENGTH = 16
# RFC 6750's token syntax: what can travel in an Authorization header unchanged.
_TOKEN_SYNTAX = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# RFC 7235: the scheme name is case-insensitive.
_BEARER = re.compile(r"bearer +(\S+) *", re.IGNORECASE)
# Headers a reverse proxy adds to name the client it relays.
_RELAY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
# Where a trusted proxy names the client, by TRUSTED_PROXY_HEADERS entry (see waitress).
_CLIENT_HEADERS = {"x-forwarded-for": "X-Forwarded-For", "forwarded": "Forwarded"}
_FORWARDED_FOR = re.compile(r"(?:^|[;,\s])for=", re.IGNORECASE)
# Host names that always mean this machine: a browser sends them only for a page that was
# itself loaded from this machine, so no DNS rebinding can produce them.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_USUAL_LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "::1"})
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
_DECLARATION = "access_role"
_PROOF = "access_proof"

logger = logging.getLogger(__name__)


def role(name: str, *, proof: Callable[[], str | None] | None = None):
    """Declare that a view serves clients of role `name` only.

    `proof`, for pages a browser signs in to: a function that returns the hex SHA-256 of
    the token the request's signed session was opened with, or None. A request without an
    Authorization header is then let in while that token is still one of the role's."""
    if name not in ROLES:
        raise ValueError(f"unknown role {name!r}; the roles are {', '.join(ROLES)}")

    def declare_view(view):
        setattr(view, _DECLARATION, name)
        setattr(view, _PROOF, proof)
        return view

    return declare_view


def open_route(view):
    """Declare that a view serves every client: it holds no personal data."""
    setattr(view, _DECLARATION, OPEN)
    return view


def declare(app: Flask, endpoint: str, role_name: str) -> None:
    """Declare the role of an endpoint whose view cannot carry a decorator."""
    if role_name not in (*ROLES, OPEN):
        raise ValueError(f"unknown role {role_name!r}")
    app.extensions["identity_access_declared"][endpoint] = role_name


def declared_role(app: Flask, endpoint: str) -> str | None:
    """The role an endpoint declared, `OPEN`, or None when it declared nothing."""
    if endpoint in app.extensions["identity_access_declared"]:
        return app.extensions["identity_access_declared"][endpoint]
    return getattr(app.view_functions.get(endpoint), _DECLARATION, None)


def undeclared_endpoints(app: Flask) -> list[str]:
    """Every endpoint of the app that declares no role: each one refuses every request."""
    return sorted(
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if declared_role(app, rule.endpoint) is None
    )


@dataclass(frozen=True)
class Token:
    role: str
    digest: bytes

    @property
    def id(self) -> str:
        return self.digest.hex()[:8]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


class Tokens:
    """The configured tokens of every role, as digests."""

    def __init__(self, config: dict):
        roles_by_digest: dict[bytes, str] = {}
        for role_name, setting in SETTINGS.items():
            for position, token in enumerate(config[setting], start=1):
                _check_token(setting, position, token)
                other = roles_by_digest.setdefault(_digest(token), role_name)
                if other != role_name:
                    raise ValueError(
                        f"{setting}: token {position} is also a {other} token; "
                        "a token grants one role only"
                    )
        self._tokens = [Token(role_name, digest) for digest, role_name in roles_by_digest.items()]

    def ids(self, role_name: str) -> list[str]:
        return [token.id for token in self._tokens if token.role == role_name]

    def find(self, presented: str) -> Token | None:
        """The configured token equal to `presented`."""
        if not _TOKEN_SYNTAX.fullmatch(presented):
            return None
        return self.find_digest(_digest(presented))

    def find_digest(self, digest: bytes) -> Token | None:
        """The configured token of this SHA-256 digest, comparing with every one of them."""
        found = None
        for token in self._tokens:
            if hmac.compare_digest(token.digest, digest):
                found = token
        return found


def _check_token(setting: str, position: int, token: str) -> None:
    # The message names the token by its position: a configuration error is logged.
    if not _TOKEN_SYNTAX.fullmatch(token):
        raise ValueError(
            f"{setting}: token {position} has characters a bearer token cannot carry "
            "(allowed: A-Z a-z 0-9 . _ ~ + / - and trailing =)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"{setting}: token {position} is shorter than {MIN_TOKEN_LENGTH} characters"
        )


def is_loopback(address: str | None) -> bool:
    """127.0.0.0/8 and ::1 (also written as ::ffff:127.x.y.z); anything else is remote."""
    if address in _USUAL_LOOPBACK_ADDRESSES:  # without parsing it, at every request
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class AccessDenied(ApiError):
    """A 401 or 403 from access control, in the JSON error shape unless a blueprint's
    error handler answers it otherwise (a sign-in page, say)."""


def _deny(status: int, reason: str, challenge: str = 'Bearer realm="identity"') -> NoReturn:
    g.access_denied = reason  # counted and logged by observability
    if status == 403:
        raise AccessDenied(403, "forbidden", "this route needs a token of another role")
    raise AccessDenied(
        401,
        "unauthorized",
        "this route needs a valid bearer token (Authorization: Bearer <token>)",
        headers={"WWW-Authenticate": challenge},
    )


def _presented_token(header: str) -> str:
    match = _BEARER.fullmatch(header)
    return match.group(1) if match else ""


def _proved_token(tokens: Tokens) -> Token | None:
    """The token a signed-in session proves, for a view that accepts one."""
    proof = getattr(current_app.view_functions.get(request.endpoint or ""), _PROOF, None)
    digest = proof() if proof else None
    try:
        return tokens.find_digest(bytes.fromhex(digest)) if digest else None
    except (TypeError, ValueError):
        return None


def _grant(route_role: str, tokens: Tokens) -> tuple[str, str | None]:
    """The role and token id a request of a route of `route_role` is let in with;
    raises AccessDenied otherwise."""
    header = request.headers.get("Authorization", "")
    if header:
        token = tokens.find(_presented_token(header))
        if token is None:
            _deny(401, "unknown_token", 'Bearer realm="identity", error="invalid_token"')
        if token.role != route_role:
            g.access_role, g.access_token_id = token.role, token.id  # the log names who tried
            _deny(403, "other_role")
        return token.role, token.id
    proved = _proved_token(tokens)
    if proved is not None and proved.role == route_role:
        return proved.role, proved.id
    if tokens.ids(route_role):
        _deny(401, "no_token")
    if not is_loopback(request.remote_addr):
        _deny(401, "loopback_only")
    if not _local_client(current_app.config):
        _deny(401, "relayed")
    return route_role, None


def _local_client(config) -> bool:
    """Whether a client at a loopback address is really on this machine, not relayed to us.

    With no trusted proxy, a request carrying a proxy's headers came through a proxy that
    nobody told us about (nginx on 127.0.0.1, say, with TRUSTED_PROXY forgotten): its
    client may be anywhere. With a trusted proxy, waitress has already replaced the
    proxy's address by the client's from the trusted header, right-most entry; when the
    proxy sent no such header, the address left is the proxy's own, which says nothing
    about the client."""
    proxy = config["TRUSTED_PROXY"]
    if not proxy:
        headers = request.headers
        relayed = [name for name in _RELAY_HEADERS if name in headers]
        if relayed:
            _warn_once_of_untrusted_proxy(relayed)
        return not relayed
    return request.remote_addr != proxy or _proxy_named_client(config)


def _proxy_named_client(config) -> bool:
    for setting, header in _CLIENT_HEADERS.items():
        value = request.headers.get(header, "")
        if setting in config["TRUSTED_PROXY_HEADERS"] and value.strip():
            if header != "Forwarded" or _FORWARDED_FOR.search(value):
                return True
    return False


def _warn_once_of_untrusted_proxy(headers: list[str]) -> None:
    if current_app.extensions.get("identity_access_warned_of_proxy"):
        return
    current_app.extensions["identity_access_warned_of_proxy"] = True
    logger.warning(
        "a request came through a proxy (it carries %s) but TRUSTED_PROXY is unset: "
        "relayed requests are not served as loopback clients; set TRUSTED_PROXY to the "
        "proxy's address, and tokens for every role",
        ", ".join(headers),
    )


def allowed_hosts(config) -> frozenset[str] | None:
    """The host names requests may be addressed to; None when ALLOWED_HOSTS is `*`."""
    configured = frozenset(config["ALLOWED_HOSTS"])
    if "*" in configured:
        return None
    listening = config["HOST"].strip("[]").lower()
    return LOOPBACK_HOSTS | configured | {listening} - _WILDCARD_ADDRESSES


def host_name(header: str) -> str:
    """The name in a Host header, without its port or brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _check_host() -> None:
    """400 for a Host this service does not answer to (SPEC §8), before anything else.

    A request without Host (HTTP/1.0) cannot come from a browser, so it is not a rebinding.
    Listening on every address (HOST=0.0.0.0 or ::), any address in Host is accepted too:
    a browser sends an address only to the machine that has it, a name it may rebind."""
    header = request.headers.get("Host")
    allowed = allowed_hosts(current_app.config)
    if header is None or allowed is None:
        return
    name = host_name(header)
    if name in allowed:
        return
    if current_app.config["HOST"] in _WILDCARD_ADDRESSES and _is_address(name):
        return
    g.access_denied = "host_not_allowed"
    raise ApiError(
        400, "host_not_allowed", "this service does not answer to that host name (Host header)"
    )


def _no_store(response):
    """Answers of routes that are not open hold personal data: no cache may keep them."""
    endpoint = request.endpoint
    if endpoint is None or declared_role(current_app, endpoint) != OPEN:
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _decide() -> None:
    if request.routing_exception is not None:
        return  # an unknown path or method: Flask answers 404 or 405, revealing nothing
    route_role = declared_role(current_app, request.endpoint or "")
    if route_role == OPEN:
        return
    if route_role is None:
        logger.error("endpoint %s declares no role: every request is refused", request.endpoint)
        _deny(403, "undeclared_route")
    tokens = current_app.extensions["identity_access"]
    g.access_role, g.access_token_id = _grant(route_role, tokens)


def _listens_on_loopback(host: str) -> bool:
    return host == "localhost" or is_loopback(host)


def log_configuration(config: dict) -> None:
    """At start (once, by the supervisor): each role's token ids, and a warning for a role
    left to loopback clients while the service listens on another address. A malformed
    token raises ValueError here, before any worker starts."""
    tokens = Tokens(config)
    for role_name, setting in SETTINGS.items():
        ids = tokens.ids(role_name)
        if ids:
            logger.info("role %s: tokens %s", role_name, ", ".join(ids))
        elif not _listens_on_loopback(config["HOST"]):
            logger.warning(
                "role %s has no token (%s is empty): only loopback clients are served, "
                "every other client gets 401",
                role_name,
                setting,
            )


def init_app(app: Flask) -> None:
    """Read the tokens (a malformed one stops the app from starting) and guard every request.

    Call after observability.init_app: its hook must run first, to start the request's
    timing and take its request id, which a refusal's log line carries too."""
    app.extensions["identity_access"] = Tokens(app.config)
    app.extensions["identity_access_declared"] = {}
    app.before_request(_check_host)
    app.before_request(_decide)
    app.after_request(_no_store)
