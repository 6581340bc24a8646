"""Access control: who may call which route, decided before the body is read.

Every route belongs to one role (checkout, support, feed) or is open. A client proves its
role with a bearer token of that role; a role with no token configured serves loopback
clients only. 401 for no or an unknown token, 403 for another role's token.
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import random
import secrets
import shutil
import subprocess
import sys

import pytest
from conftest import identify, rows
from flask import Blueprint, redirect, session
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import (
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from servers import ServerProcess
from werkzeug.test import EnvironBuilder

from identity import create_app
from identity.database.connections import close_pool
from identity.process.logs import json_formatter
from identity.web import access

# Two tokens per role, as during a rotation; random, so that a log can be searched for them.
TOKENS = {role: [secrets.token_urlsafe(24), secrets.token_urlsafe(24)] for role in access.ROLES}
UNKNOWN_TOKEN = secrets.token_urlsafe(24)
ALL_TOKENS = {setting: TOKENS[role] for role, setting in access.SETTINGS.items()}
NO_TOKENS = dict.fromkeys(access.SETTINGS.values(), ())
NO_TOKENS_ENV = dict.fromkeys(access.SETTINGS.values(), "")
ALL_TOKENS_ENV = {setting: ",".join(tokens) for setting, tokens in ALL_TOKENS.items()}
LOOPBACK, REMOTE = "127.0.0.1", "203.0.113.9"  # REMOTE: a documentation address (RFC 5737)
SEED = {"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"}

# Every route with a request that succeeds once access is granted, and its role: the
# product's table of who may call what, written out here independently of the decorators.
ROUTES = [
    ("POST", "/identify", {"json": {"email": "mcfly@hillvalley.edu"}}, "checkout"),
    ("GET", "/identify", {"query_string": {"email": SEED["email"]}}, "support"),
    ("GET", "/contacts/1", {}, "support"),
    ("GET", "/contacts/1/history", {}, "support"),
    ("POST", "/contacts/1/detach", {"json": {"phoneNumber": SEED["phoneNumber"]}}, "support"),
    ("DELETE", "/contacts/1", {}, "support"),
    ("GET", "/hubs", {}, "support"),
    ("GET", "/events", {}, "feed"),
    ("GET", "/healthz", {}, access.OPEN),
    ("GET", "/readyz", {}, access.OPEN),
    ("GET", "/metrics", {}, access.OPEN),
    ("GET", "/openapi.json", {}, access.OPEN),
]  # fmt: skip
# The support console's pages: a browser proves the support role with the console's signed
# session (a `proof`) instead of a bearer token; tests/test_console.py tests them.
CONSOLE_ROUTES = [
    ("GET", "/console/sign-in", access.OPEN),
    ("POST", "/console/sign-in", access.OPEN),
    ("GET", "/console/static/console.css", access.OPEN),
    ("POST", "/console/sign-out", "support"),
    ("GET", "/console/", "support"),
    ("POST", "/console/search", "support"),
    ("GET", "/console/hubs", "support"),
    ("GET", "/console/contacts/1", "support"),
    ("POST", "/console/contacts/1/detach/review", "support"),
    ("POST", "/console/contacts/1/detach", "support"),
    ("GET", "/console/contacts/1/erase", "support"),
    ("POST", "/console/contacts/1/erase", "support"),
]
CREDENTIALS = [None, "unknown", *access.ROLES]


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def credential_headers(credential: str | None) -> dict:
    if credential is None:
        return {}
    return auth(UNKNOWN_TOKEN if credential == "unknown" else TOKENS[credential][0])


def make_app(database_url: str, tokens: dict, **settings):
    return create_app({"TESTING": True, "DATABASE_URL": database_url, **tokens, **settings})


@pytest.fixture(scope="module")
def apps(database_url):
    """One app with tokens for every role, one with none, on the test database."""
    built = {True: make_app(database_url, ALL_TOKENS), False: make_app(database_url, NO_TOKENS)}
    yield built
    for app in built.values():
        close_pool(app)


def denied(app, rule: str, reason: str) -> float:
    registry = app.extensions["identity_metrics"].registry
    labels = {"route": rule, "reason": reason}
    return registry.get_sample_value("identity_access_denied_total", labels) or 0


def rule_of(app, method: str, path: str) -> str:
    rule, _ = app.url_map.bind("localhost").match(path, method=method, return_rule=True)
    return rule.rule


def expected(route_role: str, credential: str | None, configured: bool, client: str):
    """SPEC's decision as (status, reason counted in /metrics)."""
    if route_role == access.OPEN:
        return 200, None
    if credential is None:
        if configured:
            return 401, "no_token"
        return (200, None) if client == LOOPBACK else (401, "loopback_only")
    if configured and credential in access.ROLES:
        return (200, None) if credential == route_role else (403, "other_role")
    return 401, "unknown_token"  # with no token configured, every token is unknown


def test_every_route_declares_the_role_the_product_gives_it(apps):
    """A route added without a role fails here; so does one whose role differs from SPEC."""
    app = apps[True]
    assert access.undeclared_endpoints(app) == []
    declared = {
        (method, rule.rule): access.declared_role(app, rule.endpoint)
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    listed = {
        (method, rule_of(app, method, path)): role
        for method, path, role in [(m, p, r) for m, p, _, r in ROUTES] + CONSOLE_ROUTES
    }
    assert declared == listed


@pytest.mark.parametrize("client", [LOOPBACK, REMOTE])
@pytest.mark.parametrize("configured", [True, False], ids=["tokens", "no-tokens"])
@pytest.mark.parametrize("credential", CREDENTIALS, ids=lambda c: f"token-{c}")
@pytest.mark.parametrize(
    "method, path, kwargs, route_role", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
def test_access_matrix(apps, db, method, path, kwargs, route_role, credential, configured, client):
    """Every route × credential × tokens configured or not × loopback or remote client."""
    identify(apps[False].test_client(), SEED)  # row 1, from loopback without tokens
    app = apps[configured]
    status, reason = expected(route_role, credential, configured, client)
    rule = rule_of(app, method, path)
    before = denied(app, rule, reason) if reason else None
    stored = rows(db)

    response = app.test_client().open(
        path,
        method=method,
        headers=credential_headers(credential),
        environ_base={"REMOTE_ADDR": client},
        **kwargs,
    )

    assert response.status_code == status, response.get_json()
    # Answers of protected routes hold personal data, refusals too: no cache keeps them.
    no_store = response.headers.get("Cache-Control") == "no-store"
    assert no_store is (route_role != access.OPEN)
    if status == 200:
        return
    assert rows(db) == stored  # a refused request changes nothing
    assert denied(app, rule, reason) == before + 1
    error = response.get_json()["error"]
    if status == 401:
        assert error["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    else:
        assert error["code"] == "forbidden" and "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize(
    "address, loopback",
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.200.0.2", False),
        ("::ffff:10.0.0.1", False),
        ("0.0.0.0", False),
        ("fe80::1%eth0", False),
        ("localhost", False),  # a name is not an address: remote_addr is always one
        ("", False),
        (None, False),
    ],
)
def test_loopback_means_127_0_0_0_8_and_ipv6_1(address, loopback):
    assert access.is_loopback(address) is loopback


def test_a_role_without_tokens_serves_loopback_while_other_roles_have_tokens(database_url, db):
    """The loopback rule is per role; another role's token is still refused with 403."""
    app = make_app(database_url, {**NO_TOKENS, "CHECKOUT_TOKENS": TOKENS["checkout"]})
    client = app.test_client()
    checkout = auth(TOKENS["checkout"][0])
    try:
        assert client.post("/identify", json=SEED, headers=checkout).status_code == 200
        assert client.post("/identify", json=SEED).status_code == 401
        assert client.get("/contacts/1").status_code == 200
        remote = {"REMOTE_ADDR": REMOTE}
        assert client.get("/contacts/1", environ_base=remote).status_code == 401
        assert client.get("/contacts/1", headers=checkout).status_code == 403
    finally:
        close_pool(app)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "{", "content_type": "application/json"},
        {"data": "x", "content_type": "text/plain"},
        {"data": "x" * 70_000, "content_type": "application/json"},
        {"json": {"email": "not-an-address"}},
        {"json": {}},
    ],
    ids=["malformed", "not-json", "too-large", "invalid-field", "no-identifier"],
)
@pytest.mark.parametrize("credential, status", [(None, 401), ("unknown", 401), ("feed", 403)])
def test_access_is_decided_before_the_body_is_read(apps, db, kwargs, credential, status):
    """An unauthorised client learns nothing about validation: never a 400, 413 or 415."""
    response = apps[True].test_client().post(
        "/identify", headers=credential_headers(credential), **kwargs
    )
    assert response.status_code == status


@pytest.mark.parametrize(
    "header, status",
    [
        ("Bearer {token}", 200),
        ("bearer {token}", 200),  # the scheme's name is case-insensitive
        ("Bearer  {token} ", 200),
        ("Bearer {token}x", 401),
        ("Bearer x{token}", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        ("Basic {token}", 401),
        ("{token}", 401),
        ("Bearer {token},{token}", 401),
        ("Bearer tökén-with-non-ascii", 401),
    ],
)
def test_only_an_exact_bearer_token_counts(apps, db, header, status):
    identify(apps[False].test_client(), SEED)
    headers = {"Authorization": header.format(token=TOKENS["support"][0])}
    assert apps[True].test_client().get("/contacts/1", headers=headers).status_code == status


def test_every_configured_token_works_and_a_removed_one_is_revoked(database_url, db):
    """Rotation: add the new token, move clients over, remove the old one, restart."""
    old, new = TOKENS["support"]
    both = make_app(database_url, {**NO_TOKENS, "SUPPORT_TOKENS": (old, new)})
    after = make_app(database_url, {**NO_TOKENS, "SUPPORT_TOKENS": (new,)})
    try:
        identify(both.test_client(), SEED)  # checkout has no token: loopback may write
        for token in (old, new):
            assert both.test_client().get("/contacts/1", headers=auth(token)).status_code == 200
        assert after.test_client().get("/contacts/1", headers=auth(new)).status_code == 200
        refused = after.test_client().get("/contacts/1", headers=auth(old))
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    finally:
        close_pool(both)
        close_pool(after)


def test_tokens_come_comma_separated_from_the_environment(monkeypatch, database_url, db):
    first, second = TOKENS["feed"]
    monkeypatch.setenv("FEED_TOKENS", f" {first} ,, {second},")
    app = create_app({"TESTING": True, "DATABASE_URL": database_url})
    assert app.extensions["identity_access"].ids("feed") == [token_id(first), token_id(second)]


@pytest.mark.parametrize(
    "tokens, complaint",
    [
        ({"SUPPORT_TOKENS": ("short-token",)}, "SUPPORT_TOKENS: token 1 is shorter than 16"),
        ({"FEED_TOKENS": ("a" * 20, "with space " + "a" * 20)}, "FEED_TOKENS: token 2 has"),
        ({"FEED_TOKENS": ("ünïcode" + "a" * 20,)}, "FEED_TOKENS: token 1 has"),
        (
            {"CHECKOUT_TOKENS": (TOKENS["feed"][0],), "FEED_TOKENS": (TOKENS["feed"][0],)},
            "FEED_TOKENS: token 1 is also a checkout token",
        ),
    ],
)
def test_a_bad_token_stops_the_app_from_starting_without_showing_it(tokens, complaint):
    with pytest.raises(ValueError) as raised:
        create_app({"TESTING": True, **NO_TOKENS, **tokens})
    assert complaint in str(raised.value)
    for values in tokens.values():
        for token in values:
            assert token not in str(raised.value)


def test_a_route_without_a_role_is_refused_even_on_loopback(database_url):
    """Fail closed: a forgotten declaration refuses everyone, and is listed."""
    app = make_app(database_url, NO_TOKENS)
    app.add_url_rule("/forgotten", "forgotten", lambda: {"personal": "data"})
    assert access.undeclared_endpoints(app) == ["forgotten"]
    response = app.test_client().get("/forgotten")
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    assert denied(app, "/forgotten", "undeclared_route") == 1


def test_an_endpoint_without_a_view_of_ours_is_declared_by_name(database_url, tmp_path):
    """A blueprint's static files: its view is Flask's own, so the endpoint is declared."""
    (tmp_path / "style.css").write_text("body {}")
    app = make_app(database_url, NO_TOKENS)
    files = Blueprint("files", __name__, static_folder=tmp_path, static_url_path="/files")
    app.register_blueprint(files)
    client = app.test_client()
    assert access.undeclared_endpoints(app) == ["files.static"]
    assert client.get("/files/style.css").status_code == 403
    access.declare(app, "files.static", access.OPEN)
    assert access.undeclared_endpoints(app) == []
    assert client.get("/files/style.css", environ_base={"REMOTE_ADDR": REMOTE}).status_code == 200


def signed_in_app(database_url, tokens: dict):
    """An app with a page a browser signs in to: its session holds the token's digest, and
    a refusal sends the browser to a sign-in page instead of a JSON error."""
    app = make_app(database_url, tokens, SECRET_KEY=secrets.token_hex(16))
    app.config["SESSION_COOKIE_PATH"] = "/"  # the console keeps its cookie to /console
    pages = Blueprint("pages", __name__)

    @pages.get("/pages/home")
    @access.role("support", proof=lambda: session.get("token_digest"))
    def home():
        return "home"

    @pages.errorhandler(access.AccessDenied)
    def to_sign_in(_error):
        return redirect("/pages/sign-in", 303)

    app.register_blueprint(pages)
    return app


def signed_in_client(app, token: str | None):
    client = app.test_client()
    with client.session_transaction() as cookie:
        cookie["token_digest"] = token and hashlib.sha256(token.encode()).hexdigest()
    return client


@pytest.mark.parametrize(
    "session_token, status",
    [
        (TOKENS["support"][1], 200),
        (TOKENS["checkout"][0], 303),  # another role's token proves nothing here
        (UNKNOWN_TOKEN, 303),
        (None, 303),
    ],
)
def test_a_page_a_browser_signs_in_to_accepts_its_session_as_proof(
    database_url, session_token, status
):
    app = signed_in_app(database_url, ALL_TOKENS)
    response = signed_in_client(app, session_token).get("/pages/home")
    assert response.status_code == status
    if status == 303:
        assert response.headers["Location"] == "/pages/sign-in"
        assert denied(app, "/pages/home", "no_token") == 1
    close_pool(app)


def test_a_session_proof_ends_when_its_token_is_removed(database_url):
    old, new = TOKENS["support"]
    before = signed_in_app(database_url, {**NO_TOKENS, "SUPPORT_TOKENS": (old, new)})
    after = signed_in_app(
        database_url, {**NO_TOKENS, "SUPPORT_TOKENS": (new,), "FEED_TOKENS": TOKENS["feed"]}
    )
    after.secret_key = before.secret_key
    assert signed_in_client(before, old).get("/pages/home").status_code == 200
    assert signed_in_client(after, old).get("/pages/home").status_code == 303
    # A bearer token counts first: another role's is refused even with a valid session.
    client = signed_in_client(after, new)
    assert client.get("/pages/home", headers=auth(TOKENS["feed"][0])).status_code == 303
    assert denied(after, "/pages/home", "other_role") == 1


def test_a_declaration_names_a_known_role():
    with pytest.raises(ValueError):
        access.role("admin")


def test_unknown_paths_and_methods_stay_404_and_405(apps):
    client = apps[True].test_client()
    assert client.get("/nowhere").status_code == 404
    response = client.put("/identify")
    assert response.status_code == 405 and "POST" in response.headers["Allow"]


def test_every_configured_token_is_compared_in_constant_time(apps, monkeypatch):
    """Each presented token is compared with every configured one, by hmac.compare_digest,
    whichever matches: the time taken says nothing about which one, or how close a guess."""
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    client = apps[True].test_client()
    configured = sum(len(tokens) for tokens in TOKENS.values())
    for headers in (auth(TOKENS["checkout"][0]), auth(TOKENS["feed"][1]), auth(UNKNOWN_TOKEN)):
        compared.clear()
        client.get("/contacts/1", headers=headers)
        assert len(compared) == configured


def token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def test_the_access_log_names_role_and_token_id_never_the_token(apps, db, caplog):
    caplog.set_level(logging.DEBUG)
    client = apps[True].test_client()
    checkout, support = TOKENS["checkout"][1], TOKENS["support"][0]
    client.post("/identify", json=SEED, headers=auth(checkout))
    client.get("/contacts/1", headers=auth(checkout))
    client.get("/contacts/1", headers=auth(UNKNOWN_TOKEN))
    client.get("/contacts/1", headers=auth(support))
    apps[False].test_client().get("/contacts/1")
    lines = [
        json.loads(json_formatter().format(record))
        for record in caplog.records
        if record.name == "identity.web.access"
    ]
    fields = ("status", "role", "token_id", "access_denied")
    assert [tuple(line[name] for name in fields) for line in lines] == [
        (200, "checkout", token_id(checkout), None),
        (403, "checkout", token_id(checkout), "other_role"),
        (401, None, None, "unknown_token"),
        (200, "support", token_id(support), None),
        (200, "support", None, None),  # loopback, no token configured
    ]
    logged = caplog.text + " ".join(json.dumps(vars(r), default=str) for r in caplog.records)
    for token in (checkout, support, UNKNOWN_TOKEN):
        assert token not in logged


def test_metrics_count_refusals_by_route_and_reason_without_tokens(database_url, db):
    app = make_app(database_url, ALL_TOKENS)
    client = app.test_client()
    client.get("/contacts/7", headers=auth(UNKNOWN_TOKEN))
    client.get("/contacts/8")
    client.get("/contacts/9")
    text = client.get("/metrics").get_data(as_text=True)
    route = "/contacts/<contact_id:contact_id>"
    for reason, count in (("unknown_token", 1), ("no_token", 2)):
        sample = f'identity_access_denied_total{{reason="{reason}",route="{route}"}}'
        assert f"{sample} {count}.0" in text
    assert UNKNOWN_TOKEN not in text


@pytest.mark.parametrize(
    "host, tokens, warned",
    [
        ("0.0.0.0", NO_TOKENS, list(access.ROLES)),
        ("10.200.0.1", {**NO_TOKENS, "SUPPORT_TOKENS": TOKENS["support"]}, ["checkout", "feed"]),
        ("::", ALL_TOKENS, []),
        ("127.0.0.1", NO_TOKENS, []),
        ("localhost", NO_TOKENS, []),
    ],
)
def test_a_warning_at_start_for_every_role_left_to_loopback_on_a_public_address(
    database_url, caplog, host, tokens, warned
):
    caplog.set_level(logging.INFO, logger="identity.web.access")
    access.log_configuration(make_app(database_url, tokens, HOST=host).config)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [message.split()[1] for message in warnings] == warned
    infos = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    for role in access.ROLES:
        if tokens[access.SETTINGS[role]]:
            assert all(token_id(token) in infos for token in tokens[access.SETTINGS[role]])


def test_the_openapi_document_declares_each_routes_bearer_scheme(apps, db):
    client = apps[True].test_client()
    document = client.get("/openapi.json").get_json()
    assert set(document["components"]["securitySchemes"]) == set(access.ROLES)
    for scheme in document["components"]["securitySchemes"].values():
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, _, role in ROUTES:
        template = path.replace("/1", "/{contact_id}")
        operation = document["paths"][template][method.lower()]
        assert operation["security"] == ([] if role == access.OPEN else [{role: []}])
    # Refusals validate against the document, like every other answer.
    openapi = OpenAPI.from_dict(document)
    for headers in ({}, auth(TOKENS["feed"][0])):
        response = client.get("/contacts/1", headers=headers)
        request = EnvironBuilder(path="/contacts/1", method="GET").get_request()
        openapi.validate_response(
            WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response)
        )


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def access_warnings(path) -> list[str]:
    """Access control's warnings in a server's log (the supervisor may warn of other
    things, such as workers left running as root)."""
    return [
        line["message"]
        for line in log_lines(path)
        if line["levelname"] == "WARNING" and line["name"] == "identity.web.access"
    ]


def test_no_server_log_line_contains_a_token(database_url, db, tmp_path):
    """A real server, logging everything at DEBUG: tokens never appear, their ids do."""
    log = tmp_path / "server.log"
    checkout, support = TOKENS["checkout"][0], TOKENS["support"][1]
    calls = [
        ("POST", "/identify", json.dumps(SEED), auth(checkout)),
        ("GET", "/contacts/1", None, auth(support)),
        ("GET", "/contacts/1", None, auth(checkout)),
        ("GET", "/contacts/1", None, auth(UNKNOWN_TOKEN)),
        ("GET", "/contacts/1", None, {"Authorization": f"Basic {support}"}),
    ]
    with open(log, "w") as stderr:
        with ServerProcess(
            database_url, stderr=stderr, LOG_LEVEL="DEBUG", **ALL_TOKENS_ENV
        ) as server:
            answers = call(server.host, server.port, calls)
    assert [status for status, _, _ in answers] == [200, 200, 403, 401, 401]
    text = log.read_text()
    for token in (*[t for tokens in TOKENS.values() for t in tokens], UNKNOWN_TOKEN):
        assert token not in text
    requests = [line for line in log_lines(log) if line.get("message") == "request"]
    assert [(line["role"], line["token_id"]) for line in requests] == [
        ("checkout", token_id(checkout)),
        ("support", token_id(support)),
        ("checkout", token_id(checkout)),
        (None, None),
        (None, None),
    ]


# Runs in the client's network namespace: sends the calls read from stdin, one connection
# each, and prints [status, WWW-Authenticate, body] for each.
CLIENT = """
import http.client, json, sys
host, port, calls = json.load(sys.stdin)
answers = []
for method, path, body, headers in calls:
    connection = http.client.HTTPConnection(host, port, timeout=20)
    connection.request(method, path, body, {"Content-Type": "application/json", **headers})
    response = connection.getresponse()
    answers.append([response.status, response.getheader("WWW-Authenticate"),
                    json.loads(response.read() or "null")])
    connection.close()
print(json.dumps(answers))
"""


def call(host: str, port: int, calls: list, namespace: str | None = None) -> list:
    """Send calls from this process's network, or from inside `namespace`."""
    command = [sys.executable, "-c", CLIENT]
    if namespace:
        command = ["ip", "netns", "exec", namespace, *command]
    finished = subprocess.run(
        command, input=json.dumps([host, port, calls]), capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def ip(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *arguments], capture_output=True, text=True, timeout=30)


# Namespaces are named after the test process, so that one left by a run that was killed
# before it could clean up is recognised and removed by the next run.
NAMESPACE_PREFIX = "identity-access-"


def remove_namespaces_of_killed_runs() -> None:
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        owner = name.removeprefix(NAMESPACE_PREFIX).split("-")[0]
        if name.startswith(NAMESPACE_PREFIX) and owner.isdigit() and not alive(int(owner)):
            ip("netns", "del", name)  # its end of the veth pair goes with it, and so the pair


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def unused_subnet() -> tuple[str, str]:
    """The two addresses of a /30 of 10.200.0.0/16 that overlaps no network of this machine."""
    in_use = [
        ipaddress.ip_interface(line.split()[3]).network
        for line in ip("-o", "-4", "addr").stdout.splitlines()
    ]
    while True:
        third, fourth = random.randrange(256), 4 * random.randrange(64)
        subnet = ipaddress.ip_network(f"10.200.{third}.{fourth}/30")
        if not any(subnet.overlaps(network) for network in in_use):
            return tuple(str(address) for address in subnet.hosts())


@pytest.fixture
def namespace():
    """A network namespace joined to ours by a veth pair, on a /30 of 10.200.0.0/16 that
    exists only on that pair: (namespace, our end's address). Removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    if not shutil.which("ip"):
        pytest.skip("creating a network namespace needs the ip command (iproute2)")
    remove_namespaces_of_killed_runs()
    tag = secrets.token_hex(4)
    name, ours, theirs = f"{NAMESPACE_PREFIX}{os.getpid()}-{tag}", f"ida{tag}h", f"ida{tag}n"
    host, client = unused_subnet()
    created = ip("netns", "add", name)
    if created.returncode != 0:
        pytest.skip(f"this machine does not allow a network namespace: {created.stderr.strip()}")
    try:
        paired = ip("link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", name)
        if paired.returncode != 0:
            pytest.skip(f"this machine does not allow a veth pair: {paired.stderr.strip()}")
        for step in (
            ("addr", "add", f"{host}/30", "dev", ours),
            ("link", "set", ours, "up"),
            ("-n", name, "addr", "add", f"{client}/30", "dev", theirs),
            ("-n", name, "link", "set", theirs, "up"),
        ):
            done = ip(*step)
            assert done.returncode == 0, f"ip {' '.join(step)}: {done.stderr}"
        entered = ip("netns", "exec", name, "true")
        if entered.returncode != 0:
            pytest.skip(f"this machine does not allow entering a namespace: {entered.stderr}")
        yield name, host
    finally:
        ip("link", "del", ours)
        ip("netns", "del", name)
        assert name not in ip("netns", "list").stdout


def test_a_client_on_another_address_needs_a_token(namespace, database_url, db, tmp_path):
    """For real: the server listens on our end of a veth pair and the client sends from the
    other end, inside a network namespace, so its address is not a loopback one."""
    name, host = namespace
    body = json.dumps(SEED)
    log = tmp_path / "open.log"
    calls = [
        ("GET", "/healthz", None, {}),  # the network works: an open route answers
        ("POST", "/identify", body, {}),
        ("GET", "/contacts/1", None, {}),
        ("GET", "/identify?email=lorraine%40hillvalley.edu", None, {}),
    ]
    with open(log, "w") as stderr:
        with ServerProcess(database_url, host=host, stderr=stderr, **NO_TOKENS_ENV) as server:
            answers = call(host, server.port, calls, namespace=name)
    assert [answer[0] for answer in answers] == [200, 401, 401, 401]
    assert all(answer[1].startswith("Bearer ") for answer in answers[1:])
    assert {answer[2]["error"]["code"] for answer in answers[1:]} == {"unauthorized"}
    assert rows(db) == []
    assert [message.split()[1] for message in access_warnings(log)] == list(access.ROLES)

    checkout, support = TOKENS["checkout"][0], TOKENS["support"][0]
    log = tmp_path / "tokens.log"
    tokens = {**NO_TOKENS_ENV, "CHECKOUT_TOKENS": checkout, "SUPPORT_TOKENS": support}
    calls = [
        ("POST", "/identify", body, auth(checkout)),
        ("GET", "/contacts/1", None, auth(support)),
        ("GET", "/contacts/1", None, auth(checkout)),
        ("GET", "/contacts/1", None, {}),
        ("POST", "/identify", body, auth(UNKNOWN_TOKEN)),
    ]
    with open(log, "w") as stderr:
        with ServerProcess(
            database_url, host=host, stderr=stderr, LOG_LEVEL="DEBUG", **tokens
        ) as server:
            answers = call(host, server.port, calls, namespace=name)
    assert [answer[0] for answer in answers] == [200, 200, 403, 401, 401]
    assert answers[1][2]["contact"]["emails"] == [SEED["email"]]
    text = log.read_text()
    assert checkout not in text and support not in text and UNKNOWN_TOKEN not in text
    assert [message.split()[1] for message in access_warnings(log)] == ["feed"]



RELAY_HEADERS = [
    {"X-Forwarded-For": "127.0.0.1"},
    {"Forwarded": "for=127.0.0.1"},
    {"X-Real-IP": "127.0.0.1"},
]


@pytest.mark.parametrize("relay", RELAY_HEADERS, ids=lambda headers: next(iter(headers)))
def test_a_request_relayed_by_a_proxy_nobody_trusts_is_not_a_loopback_client(
    database_url, db, caplog, relay
):
    """nginx on 127.0.0.1 with TRUSTED_PROXY forgotten: every client of the proxy would
    look local. A relayed request is refused instead, and the log says why, once."""
    caplog.set_level(logging.WARNING, logger="identity.web.access")
    identify(make_app(database_url, NO_TOKENS).test_client(), SEED)
    app = make_app(database_url, NO_TOKENS)
    client = app.test_client()
    for _ in range(2):
        response = client.get("/contacts/1", headers=relay, environ_base={"REMOTE_ADDR": LOOPBACK})
        assert response.status_code == 401, response.get_json()
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert denied(app, "/contacts/<contact_id:contact_id>", "relayed") == 2
    assert client.get("/contacts/1", environ_base={"REMOTE_ADDR": LOOPBACK}).status_code == 200
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "TRUSTED_PROXY is unset" in warnings[0]
    assert next(iter(relay)) in warnings[0]


@pytest.mark.parametrize(
    "trusted, headers, status",
    [
        ("forwarded", {}, 401),  # the proxy named no client: its own address is not one
        ("forwarded", {"Forwarded": "proto=https"}, 401),
        ("forwarded", {"Forwarded": "for=203.0.113.9"}, 401),
        ("forwarded", {"Forwarded": "for=127.0.0.1, for=203.0.113.9"}, 401),  # client's + proxy's
        ("forwarded", {"Forwarded": "for=203.0.113.9, for=127.0.0.1"}, 200),
        ("forwarded", {"X-Forwarded-For": "127.0.0.1"}, 401),  # not the trusted header
        ("x-forwarded-for", {}, 401),
        ("x-forwarded-for", {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}, 401),
        ("x-forwarded-for", {"X-Forwarded-For": "127.0.0.1"}, 200),
        ("x-forwarded-for", {"Forwarded": "for=127.0.0.1"}, 401),
    ],
)
def test_behind_a_trusted_proxy_only_the_client_it_names_is_local(
    database_url, db, trusted, headers, status
):
    """A real server trusting a proxy on 127.0.0.1: the client is the right-most entry
    the proxy added to its header, and a request without one is not a loopback client."""
    identify(make_app(database_url, NO_TOKENS).test_client(), SEED)
    settings = {"TRUSTED_PROXY": LOOPBACK, "TRUSTED_PROXY_HEADERS": trusted}
    with ServerProcess(database_url, **NO_TOKENS_ENV, **settings) as server:
        answers = call(server.host, server.port, [("GET", "/contacts/1", None, headers)])
    assert answers[0][0] == status, answers
    if status == 401:
        assert answers[0][2]["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "host, settings, allowed",
    [
        ("localhost", {}, True),
        ("localhost:3000", {}, True),
        ("127.0.0.1:3000", {}, True),
        ("[::1]:3000", {}, True),
        ("LocalHost.:3000", {}, True),
        ("rebound.example", {}, False),
        ("rebound.example:3000", {}, False),
        ("127.0.0.1.rebound.example", {}, False),
        ("10.1.2.3:3000", {}, False),
        ("10.1.2.3:3000", {"HOST": "10.1.2.3"}, True),
        ("10.1.2.4:3000", {"HOST": "10.1.2.3"}, False),
        ("10.1.2.3:3000", {"HOST": "0.0.0.0"}, True),  # any address: none can be rebound
        ("[2001:db8::1]", {"HOST": "::"}, True),
        ("rebound.example", {"HOST": "0.0.0.0"}, False),
        ("identity.example.com", {"ALLOWED_HOSTS": {"identity.example.com"}}, True),
        ("localhost", {"ALLOWED_HOSTS": {"identity.example.com"}}, True),
        ("rebound.example", {"ALLOWED_HOSTS": {"identity.example.com"}}, False),
        ("rebound.example", {"ALLOWED_HOSTS": {"*"}}, True),
    ],
)
def test_only_requests_addressed_to_an_allowed_host_are_served(
    database_url, db, host, settings, allowed
):
    """DNS rebinding: a page on rebound.example, its name now resolving to 127.0.0.1,
    reaches a loopback-only service, but its requests carry Host: rebound.example."""
    identify(make_app(database_url, NO_TOKENS).test_client(), SEED)
    for tokens, path, granted in ((NO_TOKENS, "/contacts/1", 200), (ALL_TOKENS, "/healthz", 200),
                                  (ALL_TOKENS, "/contacts/1", 401)):  # fmt: skip
        app = make_app(database_url, tokens, **settings)
        response = app.test_client().get(path, headers={"Host": host})
        if allowed:
            assert response.status_code == granted, response.get_json()
        else:
            assert response.status_code == 400  # before access control
            assert response.get_json()["error"]["code"] == "host_not_allowed"
            assert host.split(":")[0].lower() not in response.get_data(as_text=True)
        close_pool(app)


def test_allowed_hosts_comes_comma_separated_from_the_environment(monkeypatch, database_url):
    monkeypatch.setenv("ALLOWED_HOSTS", " Identity.Example.com, other.example ")
    app = create_app({"TESTING": True, "DATABASE_URL": database_url})
    assert access.allowed_hosts(app.config) == access.LOOPBACK_HOSTS | {
        "identity.example.com", "other.example", "127.0.0.1"
    }  # fmt: skip


# --- the threat model (docs/access.md): what a checkout token can learn, by design ---


def checkout(client, body: dict) -> dict:
    response = client.post("/identify", json=body, headers=auth(TOKENS["checkout"][0]))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["contact"]


def test_a_checkout_token_reads_a_whole_customer_from_one_value(apps, db):
    """The API's design, written down in docs/access.md: not a bug, and not hidden."""
    client = apps[True].test_client()
    checkout(client, {"email": "victim@example.com", "phoneNumber": "5550101"})
    checkout(client, {"email": "victim.work@example.com", "phoneNumber": "5550101"})
    stored = rows(db)
    seen = checkout(client, {"phoneNumber": "5550101"})
    assert seen["emails"] == ["victim@example.com", "victim.work@example.com"]
    assert rows(db) == stored  # and the look-up stored nothing: no trace in the history


def test_a_stranger_with_a_victims_phone_number_merges_and_sees_the_victims_email(apps, db):
    client = apps[True].test_client()
    checkout(client, {"email": "victim@example.com", "phoneNumber": "5550101"})
    seen = checkout(client, {"email": "stranger@example.com", "phoneNumber": "5550101"})
    assert "victim@example.com" in seen["emails"]
