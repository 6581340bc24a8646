"""The support console (/console): access by role, sign-in and its session, CSRF, the
Content-Security-Policy, search, the customer page and the confirmation steps of the
corrections."""

import hashlib
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import identify, rows

from identity import create_app
from identity.customers.model import ContactRow
from identity.database.connections import close_pool
from identity.web.console import CONTENT_SECURITY_POLICY
from identity.web.console.graph import NODE_RADIUS, NODE_SPACING, RING_GAP, layout

SUPPORT_TOKEN = "support-token-for-tests"
CHECKOUT_TOKEN = "checkout-token-for-tests"
FEED_TOKEN = "feed-token-for-tests"
ELSEWHERE = {"REMOTE_ADDR": "203.0.113.7"}  # a client that is not on this machine
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_app(database_url, **settings):
    return create_app(
        {"TESTING": True, "DATABASE_URL": database_url, "POOL_SIZE": 2, **settings}
    )


def remote_client(app):
    client = app.test_client()
    client.environ_base.update(ELSEWHERE)
    return client


@pytest.fixture
def support_app(db, database_url):
    """Tokens configured for every role: the console wants a support token."""
    app = make_app(
        database_url,
        SUPPORT_TOKENS=[SUPPORT_TOKEN, "second-support-token"],
        CHECKOUT_TOKENS=[CHECKOUT_TOKEN],
        FEED_TOKENS=[FEED_TOKEN],
    )
    yield app
    close_pool(app)


@pytest.fixture
def visitor(support_app):
    """A browser that has not signed in, from another machine."""
    return remote_client(support_app)


def csrf_of(response) -> str:
    return _CSRF.search(response.get_data(as_text=True)).group(1)


def sign_in(client, token=SUPPORT_TOKEN):
    form = client.get("/console/sign-in")
    return client.post("/console/sign-in", data={"token": token, "csrf_token": csrf_of(form)})


@pytest.fixture
def staff(visitor):
    """A support person signed in from another machine."""
    assert sign_in(visitor).status_code == 303
    return visitor


def post_form(client, page_url, action_url, **fields):
    """Submit a form the way a browser does: with the CSRF token of the page it is on."""
    page = client.get(page_url)
    return client.post(action_url, data={"csrf_token": csrf_of(page), **fields})


def search(client, text):
    return post_form(client, "/console/", "/console/search", q=text)


def text_of(response) -> str:
    return response.get_data(as_text=True)


def set_cookie(response) -> str:
    return next(v for k, v in response.headers.items() if k == "Set-Cookie")


# --- access by role (SPEC §8) -------------------------------------------------------


def test_the_console_asks_a_visitor_to_sign_in(visitor):
    response = visitor.get("/console/")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/console/sign-in")
    form = text_of(visitor.get("/console/sign-in"))
    assert re.search(r'<label for="token">[^<]+</label>', form)
    assert 'type="password"' in form


def test_a_support_token_signs_in(visitor):
    response = sign_in(visitor)
    assert response.status_code == 303
    page = visitor.get("/console/")
    assert page.status_code == 200
    assert "Find a customer" in text_of(page)


def test_the_second_configured_support_token_signs_in_too(visitor):
    assert sign_in(visitor, "second-support-token").status_code == 303
    assert visitor.get("/console/").status_code == 200


@pytest.mark.parametrize(
    "token", [CHECKOUT_TOKEN, FEED_TOKEN, "no-such-token", SUPPORT_TOKEN + "x", ""]
)
def test_a_token_that_is_not_a_support_token_shows_an_error_and_stays_signed_out(
    visitor, token
):
    response = sign_in(visitor, token)
    assert response.status_code == 401
    assert "not a valid support token" in text_of(response)
    assert visitor.get("/console/").status_code == 303  # still sent to the sign-in form


def test_sign_out_is_a_visible_button_and_ends_the_session(staff):
    page = text_of(staff.get("/console/"))
    assert re.search(r'<form method="post" action="/console/sign-out">', page)
    assert re.search(r'<button type="submit"[^>]*>Sign out</button>', page)
    response = post_form(staff, "/console/", "/console/sign-out")
    assert response.status_code == 303
    assert staff.get("/console/").status_code == 303


def test_without_support_tokens_the_console_serves_loopback_clients_without_sign_in(client):
    page = client.get("/console/")  # the test client comes from 127.0.0.1
    assert page.status_code == 200
    assert "no support token is configured" in text_of(page)
    assert client.get("/console/sign-in").status_code == 303
    ipv6 = client.get("/console/", environ_base={"REMOTE_ADDR": "::1"})
    assert ipv6.status_code == 200


@pytest.mark.parametrize("address", ["203.0.113.7", "10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1"])
def test_without_support_tokens_other_clients_are_refused(client, address):
    response = client.get("/console/", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 401
    assert "Local access only" in text_of(response)


# --- the session cookie ---------------------------------------------------------------


def test_the_session_cookie_is_signed_httponly_and_samesite_strict(visitor):
    cookie = set_cookie(sign_in(visitor))
    assert cookie.startswith("console_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert SUPPORT_TOKEN not in cookie  # the session holds a digest, not the token


def test_the_session_cookie_is_secure_when_served_over_https(support_app):
    client = remote_client(support_app)
    form = client.get("/console/sign-in", base_url="https://localhost")
    response = client.post(
        "/console/sign-in",
        base_url="https://localhost",
        data={"token": SUPPORT_TOKEN, "csrf_token": csrf_of(form)},
    )
    assert "Secure" in set_cookie(response)


def copy_of_session(staff, app=None):
    """Another browser holding a copy of the staff's session cookie."""
    copy = remote_client(app or staff.application)
    cookie = staff.get_cookie("console_session", path="/console")
    copy.set_cookie("console_session", cookie.value, path="/console")
    return copy


def session_row_id(client) -> str:
    """The id of the client's row in console_session: the SHA-256 of its cookie's key."""
    app = client.application
    cookie = client.get_cookie("console_session", path="/console").value
    key = app.session_interface.get_signing_serializer(app).loads(cookie)["session_key"]
    return hashlib.sha256(key.encode()).hexdigest()


def test_sign_out_ends_the_session_for_every_copy_of_its_cookie(staff, db):
    copy, row = copy_of_session(staff), session_row_id(staff)
    assert copy.get("/console/").status_code == 200
    assert post_form(staff, "/console/", "/console/sign-out").status_code == 303
    assert copy.get("/console/").status_code == 303
    assert copy.get("/console/contacts/1").status_code == 303
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM console_session WHERE id = %s", (row,))
        assert cur.fetchone()[0] == 0


def test_a_session_ends_eight_hours_after_sign_in_however_much_it_is_used(staff, db):
    for _ in range(3):
        response = staff.get("/console/")
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers  # no renewal, no sliding expiry
    row = session_row_id(staff)
    with db.cursor() as cur:  # as if signed in 8 hours ago, and in use ever since
        cur.execute(
            "UPDATE console_session SET signedInAt = signedInAt - interval '8 hours' "
            "WHERE id = %s", (row,)
        )
    assert staff.get("/console/").status_code == 303
    with db.cursor() as cur:
        cur.execute(
            "UPDATE console_session SET signedInAt = clock_timestamp() WHERE id = %s", (row,)
        )
    assert staff.get("/console/").status_code == 200  # the same session, young again


def test_the_server_keeps_neither_the_token_nor_the_cookies_key(staff, db):
    cookie, row = staff.get_cookie("console_session", path="/console").value, session_row_id(staff)
    with db.cursor() as cur:
        cur.execute("SELECT tokenDigest FROM console_session WHERE id = %s", (row,))
        (token_digest,) = cur.fetchone()
    assert token_digest == hashlib.sha256(SUPPORT_TOKEN.encode()).hexdigest()
    assert row not in cookie and SUPPORT_TOKEN not in cookie


def test_a_new_sign_in_forgets_expired_sessions(support_app, staff, db):
    with db.cursor() as cur:
        cur.execute("UPDATE console_session SET signedInAt = signedInAt - interval '9 hours'")
    fresh = remote_client(support_app)
    assert sign_in(fresh).status_code == 303
    with db.cursor() as cur:
        cur.execute("SELECT id FROM console_session")
        assert cur.fetchall() == [(session_row_id(fresh),)]


def test_a_tampered_session_cookie_is_refused(staff):
    value = staff.get_cookie("console_session", path="/console").value
    staff.set_cookie("console_session", value[:-2] + "xx", path="/console")
    assert staff.get("/console/").status_code == 303


def test_a_session_is_valid_on_every_worker_without_a_secret_key(database_url, staff):
    # Another process of the same deployment: same settings, no SECRET_KEY, its own key.
    other = make_app(database_url, SUPPORT_TOKENS=[SUPPORT_TOKEN, "second-support-token"])
    try:
        assert other.config["SECRET_KEY"] == staff.application.config["SECRET_KEY"]
        client = remote_client(other)
        cookie = staff.get_cookie("console_session", path="/console")
        client.set_cookie("console_session", cookie.value, path="/console")
        assert client.get("/console/").status_code == 200
    finally:
        close_pool(other)


def test_the_secret_key_from_the_environment_signs_the_session(database_url, db):
    app = make_app(database_url, SUPPORT_TOKENS=[SUPPORT_TOKEN], SECRET_KEY="from-the-env")
    try:
        assert app.config["SECRET_KEY"] == "from-the-env"
    finally:
        close_pool(app)


def test_removing_a_token_ends_the_sessions_it_opened(database_url, db):
    settings = {"SECRET_KEY": "fixed-for-this-test"}
    old, new = "old-support-token-1", "new-support-token-2"
    before = make_app(database_url, SUPPORT_TOKENS=[old, new], **settings)
    after = make_app(database_url, SUPPORT_TOKENS=[new], **settings)
    try:
        browser = remote_client(before)
        assert sign_in(browser, old).status_code == 303
        cookie = browser.get_cookie("console_session", path="/console").value
        later = remote_client(after)
        later.set_cookie("console_session", cookie, path="/console")
        assert later.get("/console/").status_code == 303
        assert "Signed in" not in text_of(later.get("/console/sign-in"))
    finally:
        close_pool(before)
        close_pool(after)


# --- CSRF -------------------------------------------------------------------------------


def seed_customer(client):
    """Rows 1 (primary) and 2 (secondary) sharing a phone; row 3 a customer of its own."""
    identify(client, {"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"})
    identify(client, {"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"})
    identify(client, {"email": "biff@hillvalley.edu", "phoneNumber": "999"})


@pytest.mark.parametrize(
    "path, fields",
    [
        ("/console/search", {"q": "lorraine@hillvalley.edu"}),
        ("/console/sign-out", {}),
        ("/console/contacts/1/detach/review", {"value": "phone:123456"}),
        ("/console/contacts/1/detach", {"value": "phone:123456", "confirm": "yes"}),
        ("/console/contacts/1/erase", {"confirm_id": "1"}),
    ],
)
@pytest.mark.parametrize("token", [None, "forged", ""])
def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    staff, db, path, fields, token
):
    seed_customer(staff)
    before = rows(db)
    data = fields if token is None else {**fields, "csrf_token": token}
    response = staff.post(path, data=data)
    assert response.status_code == 400
    assert "Form expired" in text_of(response)
    assert rows(db) == before
    assert staff.get("/console/").status_code == 200  # sign-out did not happen either


def test_sign_in_without_the_csrf_token_is_refused(visitor):
    response = visitor.post("/console/sign-in", data={"token": SUPPORT_TOKEN})
    assert response.status_code == 400
    assert visitor.get("/console/").status_code == 303


def test_a_csrf_token_of_another_session_is_refused(support_app, staff):
    other = remote_client(support_app)
    sign_in(other)
    foreign = csrf_of(other.get("/console/"))
    response = staff.post("/console/sign-out", data={"csrf_token": foreign})
    assert response.status_code == 400


def test_the_csrf_check_also_guards_loopback_access(client, db):
    seed_customer(client)
    response = client.post("/console/contacts/1/erase", data={"confirm_id": "1"})
    assert response.status_code == 400


# --- Content-Security-Policy ---------------------------------------------------------------


def html_answers(staff, visitor, client):
    """One answer of every kind of page the console serves."""
    yield visitor.get("/console/sign-in")
    yield sign_in(visitor, "wrong")
    yield staff.get("/console/")
    yield search(staff, "nobody@hillvalley.edu")
    yield search(staff, "not an e-mail@")
    yield search(staff, "1")  # phone 1 and contact 1 are different customers
    yield staff.get("/console/contacts/2")
    yield staff.get("/console/contacts/999")
    yield post_form(
        staff, "/console/contacts/1", "/console/contacts/1/detach/review", value="phone:123456"
    )
    yield post_form(
        staff,
        "/console/contacts/1",
        "/console/contacts/1/detach",
        value="phone:123456",
        confirm="yes",
    )
    yield staff.get("/console/contacts/1/erase")
    yield post_form(staff, "/console/contacts/1", "/console/contacts/1/erase", confirm_id="2")
    yield post_form(staff, "/console/contacts/1", "/console/contacts/1/erase", confirm_id="1")
    yield staff.post("/console/search", data={})
    yield client.get("/console/", environ_base=ELSEWHERE)


def test_every_html_answer_has_a_strict_content_security_policy(staff, support_app, app):
    seed_customer(staff)
    identify(staff, {"phoneNumber": "1"})  # row 4, a customer found by the phone number "1"
    visitor = remote_client(support_app)
    answers = list(html_answers(staff, visitor, app.test_client()))
    statuses = {response.status_code for response in answers}
    assert statuses >= {200, 400, 401, 404}
    for response in answers:
        assert response.mimetype == "text/html", response.status
        policy = response.headers["Content-Security-Policy"]
        assert policy == CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in policy
        assert "script-src 'self'" in policy and "style-src 'self'" in policy
        assert response.headers["Cache-Control"] == "no-store"
        page = text_of(response)
        assert "<script" not in page and "style=" not in page and "<style" not in page


def test_the_style_sheet_ships_with_the_package(client):
    response = client.get("/console/static/console.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    package = Path(__file__).resolve().parent.parent / "identity" / "console"
    for template in (package / "templates").glob("*.html"):
        assert "http://" not in template.read_text().replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in template.read_text()


def test_the_api_is_not_given_a_content_security_policy_or_a_cookie(client):
    response = client.get("/healthz")
    assert "Content-Security-Policy" not in response.headers
    assert "Set-Cookie" not in response.headers


# --- search ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, row",
    [
        ("lorraine@hillvalley.edu", 1),
        ("  McFly@HillValley.EDU ", 2),  # normalised as POST /identify does; its own row
        ("biff@hillvalley.edu", 3),
        ("123-456", 1),
        ("(123) 456", 1),
        ("999", 3),
        ("#2", 2),  # a contact id shows the customer from that row
        ("2", 2),  # no phone number "2": the contact id
    ],
)
def test_search_leads_to_the_row_that_matched(staff, text, row):
    """The page of the row that holds the value (the oldest, if several do), scrolled to
    it: not the primary's."""
    seed_customer(staff)
    response = search(staff, text)
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/console/contacts/{row}#row-{row}")


def test_search_keeps_personal_data_out_of_the_url(staff):
    seed_customer(staff)
    response = search(staff, "lorraine@hillvalley.edu")
    assert "lorraine" not in response.headers["Location"]
    assert staff.get("/console/search").status_code == 405


@pytest.mark.parametrize("text", ["nobody@hillvalley.edu", "555", "#77", "77"])
def test_search_for_an_unknown_value_says_no_customer_matches(staff, text):
    seed_customer(staff)
    response = search(staff, text)
    assert response.status_code == 404
    assert "No customer matches" in text_of(response)


@pytest.mark.parametrize(
    "text, message",
    [
        ("not an e-mail@", "not a valid e-mail address"),
        ("12ab", "must be 1 to 15 digits"),
        ("#x", "a contact id is # followed by a number"),
        ("   ", "type an e-mail address"),
    ],
)
def test_search_explains_what_is_wrong_with_the_text(staff, text, message):
    response = search(staff, text)
    assert response.status_code == 400
    assert message in text_of(response).lower()


def test_a_number_that_is_a_phone_and_a_contact_id_lets_the_person_choose(staff):
    seed_customer(staff)
    identify(staff, {"email": "doc@hillvalley.edu", "phoneNumber": "3"})  # row 4
    response = search(staff, "3")
    assert response.status_code == 200
    page = text_of(response)
    assert 'href="/console/contacts/4#row-4">Customer #4</a>, by phone number' in page
    assert 'href="/console/contacts/3#row-3">Customer #3</a>, by contact id' in page


# --- the customer page ----------------------------------------------------------------------


def test_the_customer_page_lists_every_row(staff):
    seed_customer(staff)
    identify(staff, {"email": "lorraine@hillvalley.edu", "phoneNumber": "777"})  # row 4
    page = text_of(staff.get("/console/contacts/2"))
    assert "Customer #1" in page
    table = page[page.index('<table class="rows">') : page.index("</table>")]
    body_rows = re.findall(r"<tr id=\"row-(\d+)\"", table)
    assert body_rows == ["1", "2", "4"]  # not row 3: another customer
    for expected in ("lorraine@hillvalley.edu", "mcfly@hillvalley.edu", "123456", "777"):
        assert expected in table
    assert "biff" not in table
    assert table.count("<strong>primary</strong>") == 1
    assert table.count("secondary of #1") == 2
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[^"]+">\d{4}-\d\d-\d\d ', table)


def test_the_customer_page_draws_a_node_per_row_and_an_edge_per_shared_value(staff):
    seed_customer(staff)
    identify(staff, {"email": "lorraine@hillvalley.edu", "phoneNumber": "777"})  # row 4
    page = text_of(staff.get("/console/contacts/1"))
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert 'role="img"' in svg
    nodes = re.findall(r'<a href="#row-(\d+)"[^>]*class="node (primary|secondary)', svg)
    assert sorted(nodes) == [("1", "primary"), ("2", "secondary"), ("4", "secondary")]
    assert svg.count("<circle") == 3
    # 2 shares the phone of 1, 4 the e-mail of 1
    assert svg.count('class="edge edge-phone"') == 1
    assert svg.count('class="edge edge-email"') == 1


def test_the_graph_draws_a_merge_that_added_no_row(staff):
    identify(staff, {"email": "a@hillvalley.edu", "phoneNumber": "100"})
    identify(staff, {"email": "b@hillvalley.edu", "phoneNumber": "200"})
    identify(staff, {"email": "a@hillvalley.edu", "phoneNumber": "200"})  # joins 2 to 1
    page = text_of(staff.get("/console/contacts/2"))
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert svg.count("<circle") == 2
    assert re.findall(r'class="edge edge-(\w+)"', svg) == ["merge"]
    assert "#1 and #2 were merged by a checkout" in svg


def test_the_customer_page_shows_the_history_newest_first(staff):
    def request_id(body: dict) -> str:  # the id the service gave the checkout
        checkout = {"Authorization": f"Bearer {CHECKOUT_TOKEN}"}
        return staff.post("/identify", json=body, headers=checkout).headers["X-Request-Id"]

    r_one = request_id({"email": "a@hillvalley.edu", "phoneNumber": "100"})
    request_id({"email": "b@hillvalley.edu", "phoneNumber": "200"})
    r_bridge = request_id({"email": "a@hillvalley.edu", "phoneNumber": "200"})
    page = text_of(staff.get("/console/contacts/2"))
    timeline = page[page.index('<ol class="timeline"') : page.index("</ol>")]
    items = timeline.split("<li>")[1:]
    assert len(items) == 3
    assert "Customer #2 merged into #1" in items[0] and f"request {r_bridge}" in items[0]
    assert "Row #2 created as a new customer" in items[1]
    assert "Row #1 created as a new customer" in items[2] and f"request {r_one}" in items[2]


def test_an_unknown_contact_is_a_404_page(staff):
    response = staff.get("/console/contacts/42")
    assert response.status_code == 404
    assert "No such customer" in text_of(response)


def test_every_form_field_has_a_label(staff):
    seed_customer(staff)
    pages = [staff.get("/console/contacts/1"), staff.get("/console/contacts/1/erase")]
    for page in map(text_of, pages):
        for field_id in re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', page):
            assert f'<label for="{field_id}"' in page, field_id


# --- the graph's layout ---------------------------------------------------------------------


def a_customer(size: int, shared_phones: int = 7) -> list[ContactRow]:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        ContactRow(
            id=n,
            email=f"p{n}@hillvalley.edu",
            phone_number=str(n % shared_phones),
            linked_id=None if n == 1 else 1,
            link_precedence="primary" if n == 1 else "secondary",
            created_at=created,
        )
        for n in range(1, size + 1)
    ]


@pytest.mark.parametrize("size", [1, 2, 12, 300])
def test_the_graph_keeps_every_node_apart_with_the_primary_in_the_centre(size):
    graph = layout(a_customer(size))
    assert [node.row.id for node in graph.nodes] == list(range(1, size + 1))
    primary = graph.nodes[0]
    assert (primary.x, primary.y) == (0, 0)
    for i, first in enumerate(graph.nodes):
        assert abs(first.x) < graph.size / 2 and abs(first.y) < graph.size / 2
        for second in graph.nodes[i + 1 :]:
            assert math.dist((first.x, first.y), (second.x, second.y)) > 2 * NODE_RADIUS


def test_the_graph_draws_a_value_shared_by_many_rows_as_a_chain_of_neighbours():
    graph = layout(a_customer(300, shared_phones=1))  # one phone number on every row
    assert len(graph.edges) == 299  # not a clique of 44,850
    longest = max(
        math.dist((edge.source.x, edge.source.y), (edge.target.x, edge.target.y))
        for edge in graph.edges
    )
    assert longest < 2 * max(NODE_SPACING, RING_GAP)  # side by side: no line across labels
    assert not graph.crowded


def test_a_chain_of_rows_is_not_crowded():
    # Each row shares its e-mail with one neighbour and its phone with the other.
    chain = [
        row._replace(email=f"e{(row.id + 1) // 2}@x.io", phone_number=str(row.id // 2))
        for row in a_customer(150)
    ]
    graph = layout(chain)
    assert len(graph.edges) == 149 and not graph.crowded


# --- corrections: the confirmation steps -------------------------------------------------------


def review_detach(staff, value, **fields):
    return post_form(
        staff, "/console/contacts/2", "/console/contacts/2/detach/review", value=value, **fields
    )


def test_detach_is_reviewed_before_it_is_done(staff, db):
    seed_customer(staff)
    before = rows(db)
    review = review_detach(staff, "phone:123456", block="yes")
    assert review.status_code == 200
    page = text_of(review)
    assert "Detach phone number" in page and "123456" in page
    assert "#1, #2" in page and "blocked" in page
    form = page[page.index('<form method="post" action="/console/contacts/2/detach"') :]
    for hidden in ('name="value" value="phone:123456"', 'name="block" value="yes"',
                   'name="confirm" value="yes"', 'name="csrf_token"'):
        assert hidden in form
    assert rows(db) == before  # the review changed nothing


def test_detach_without_the_confirmation_step_is_refused(staff, db):
    seed_customer(staff)
    before = rows(db)
    response = post_form(
        staff, "/console/contacts/2", "/console/contacts/2/detach", value="phone:123456"
    )
    assert response.status_code == 400
    assert "Not confirmed" in text_of(response)
    assert rows(db) == before


@pytest.mark.parametrize(
    "value, status",
    [("phone:999", 409), ("email:biff@hillvalley.edu", 409), ("", 400), ("fax:1", 400)],
)
def test_detach_of_a_value_the_customer_does_not_hold_is_refused(staff, value, status):
    seed_customer(staff)
    assert review_detach(staff, value).status_code == status


def test_a_confirmed_detach_splits_the_customer_and_shows_the_result(staff, db):
    seed_customer(staff)
    response = post_form(
        staff,
        "/console/contacts/2",
        "/console/contacts/2/detach",
        value="phone:123456",
        block="yes",
        confirm="yes",
    )
    assert response.status_code == 200
    assert "2 customers now hold the remaining rows" in text_of(response)
    assert 'href="/console/contacts/2">Customer #2</a>' in text_of(response)
    # Rows 1 and 2 shared only the phone: each is now a primary, and the phone is gone.
    assert [(row[0], row[2], row[3], row[4]) for row in rows(db)[:2]] == [
        (1, None, None, "primary"),
        (2, None, None, "primary"),
    ]
    with db.cursor() as cur:
        cur.execute("SELECT kind, value FROM blocked_value")
        assert cur.fetchall() == [("phoneNumber", "123456")]


def test_erasure_asks_for_the_customer_number(staff, db):
    seed_customer(staff)
    page = text_of(staff.get("/console/contacts/2/erase"))
    assert "Erase customer #1?" in page and "#1, #2" in page
    assert "cannot be undone" in page
    before = rows(db)
    wrong = post_form(staff, "/console/contacts/2", "/console/contacts/2/erase", confirm_id="2")
    assert wrong.status_code == 400
    assert "Type 1 to confirm" in text_of(wrong)
    assert rows(db) == before


def test_a_confirmed_erasure_erases_the_customer_and_says_so(staff, db):
    seed_customer(staff)
    response = post_form(staff, "/console/contacts/2", "/console/contacts/2/erase", confirm_id="1")
    assert response.status_code == 200
    assert "Customer #1 erased" in text_of(response) and "#1, #2" in text_of(response)
    erased = [row for row in rows(db) if row[0] in (1, 2)]
    assert all(row[1] is None and row[2] is None for row in erased)
    assert staff.get("/console/contacts/1").status_code == 404

