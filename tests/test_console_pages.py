"""The support console's customer page for a customer of thousands of rows: rows and
history are paged (history newest first), the page opens at the row asked for, and its
size does not grow with the customer."""

import re

import pytest

ROWS = 2_000

# One customer: a primary and ROWS - 1 secondaries sharing its phone, each with its own
# e-mail, and the history a checkout per row would have written.
FILL = """
INSERT INTO contact (email, phoneNumber, linkPrecedence)
VALUES ('big0@shop.test', '555000555', 'primary');
INSERT INTO contact (email, phoneNumber, linkedId, linkPrecedence)
SELECT 'big' || n || '@shop.test', '555000555', 1, 'secondary'
  FROM generate_series(1, %(rows)s - 1) AS n;
INSERT INTO contact_event (kind, contactId, primaryId, email, phoneNumber)
SELECT CASE WHEN id = 1 THEN 'customer_created' ELSE 'secondary_added' END, id, 1, email,
       phoneNumber
  FROM contact ORDER BY id;
"""


@pytest.fixture
def big_customer(db):
    with db.cursor() as cur:
        cur.execute(FILL, {"rows": ROWS})


@pytest.fixture
def local(client):
    """A browser on the server's own machine, no support token configured: no sign-in."""
    return client


def text_of(response) -> str:
    return response.get_data(as_text=True)


def table_rows(page: str) -> list[int]:
    table = page[page.index('<table class="rows">') : page.index("</table>")]
    return [int(row_id) for row_id in re.findall(r'<tr id="row-(\d+)"', table)]


def timeline(page: str) -> list[str]:
    return page[page.index('<ol class="timeline"') : page.index("</ol>")].split("<li>")[1:]


def test_a_big_customer_shows_a_page_of_rows_and_the_newest_history(big_customer, local):
    response = local.get("/console/contacts/1")
    page = text_of(response)
    assert len(response.get_data()) < 1_000_000
    assert table_rows(page) == list(range(1, 301))
    assert page.count('<circle') == 300  # the graph draws the page's rows
    assert "2,000 rows" in page and "1–300 of 2,000" in page and "page 1 of 7" in page
    events = timeline(page)
    assert len(events) == 100
    assert "Row #2000 added" in events[0] and "Row #1901 added" in events[-1]


def test_each_list_has_its_own_pages(big_customer, local):
    page = text_of(local.get("/console/contacts/1?rows=7&history=20"))
    assert table_rows(page) == list(range(1801, 2001))
    events = timeline(page)
    assert len(events) == 100 and "Row #1 created" in events[-1]
    # The links of one list keep the other's page.
    assert 'href="/console/contacts/1?rows=6&amp;history=20#rows-title"' in page
    assert 'href="/console/contacts/1?rows=7&amp;history=19#history-title"' in page


def test_the_page_opens_at_the_row_asked_for(big_customer, local):
    page = text_of(local.get("/console/contacts/1500"))
    assert table_rows(page) == list(range(1201, 1501))
    assert re.search(r'<tr id="row-1500" class="found">', page)
    assert "page 5 of 7" in page


@pytest.mark.parametrize("asked", ["0", "-3", "99", "x"])
def test_a_page_out_of_range_shows_the_nearest(big_customer, local, asked):
    response = local.get(f"/console/contacts/1?rows={asked}&history={asked}")
    assert response.status_code == 200
    page = text_of(response)
    last = asked == "99"
    assert table_rows(page)[0] == (1801 if last else 1)
    assert ("Row #1 created" in timeline(page)[-1]) == last
    assert f"page {20 if last else 1} of 20" in page  # the history's pager
