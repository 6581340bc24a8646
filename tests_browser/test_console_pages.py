"""The customer page in a real browser at three sizes and beyond: the row a search found
is the one highlighted and scrolled into view; the graph's labels never overlap at 5, 50
and 300 rows; a customer of 700 rows is paged (rows and history). Screenshots of each in
.screenshots/ (names starting with 2x-)."""

import http.client

import pytest
from conftest import SCREENSHOTS, SUPPORT_TOKEN
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from servers import post_identify

GRAPH_SIZES = (5, 50, 300)
PAGED_SIZE = 700  # more than two pages of 300 rows, seven pages of 100 events
ROWS_PER_PHONE = 8

# Every label and circle of the graph as a box on the screen; the pairs that overlap
# (their texts), leaving out a node's own circle and labels.
OVERLAPS = """
const boxes = [];
document.querySelectorAll('svg .node').forEach((node, index) => {
  node.querySelectorAll('circle, text.value').forEach(part => {
    const box = part.getBoundingClientRect();
    boxes.push({node: index, text: part.textContent,
                left: box.left, right: box.right, top: box.top, bottom: box.bottom});
  });
});
const overlaps = [];
for (let i = 0; i < boxes.length; i++) {
  for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], b = boxes[j];
    const apart = a.right <= b.left || b.right <= a.left || a.bottom <= b.top || b.bottom <= a.top;
    if (a.node !== b.node && !apart) {
      overlaps.push(a.text + ' / ' + b.text);
    }
  }
}
return overlaps;
"""

# Whether an element is inside the visible part of its scroll box (arguments[1], a
# selector) and of the window.
IN_VIEW = """
const element = arguments[0], box = element.closest(arguments[1]).getBoundingClientRect();
const rect = element.getBoundingClientRect();
return rect.top >= box.top && rect.bottom <= box.bottom && rect.top >= 0
    && rect.bottom <= window.innerHeight && rect.left >= box.left && rect.right <= box.right;
"""


def household(size: int):
    """Checkouts of one customer that each bring one new value: every row its own
    e-mail, a phone number per ROWS_PER_PHONE rows, and the first row of each phone
    bridging to the previous one by repeating its e-mail."""
    for n in range(size):
        group, first_of_group = divmod(n, ROWS_PER_PHONE)[0], n % ROWS_PER_PHONE == 0
        email = f"h{size}-{n - 1 if first_of_group and n else n}@family.test"
        yield {"email": email, "phoneNumber": f"+44 7{size:03d} {group:06d}"}


@pytest.fixture(scope="module")
def row_ids(server) -> dict[int, list[int]]:
    """size -> the customer's row ids, oldest first (one row per checkout)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    customers = {}
    for size in (*GRAPH_SIZES, PAGED_SIZE):
        answers = [post_identify(connection, body) for body in household(size)]
        assert all(status == 200 for status, _, _ in answers)
        contact = answers[-1][2]["contact"]
        customers[size] = [contact["primaryContactId"], *contact["secondaryContactIds"]]
        assert len(customers[size]) == size
    connection.close()
    return customers


@pytest.fixture
def signed_in(browser, server):
    browser.set_window_size(1280, 900)
    browser.get(f"{server.url}/console/sign-in")
    if browser.find_elements(By.ID, "token"):
        browser.find_element(By.ID, "token").send_keys(SUPPORT_TOKEN, Keys.ENTER)
        WebDriverWait(browser, 10).until(lambda driver: "Search" in driver.title)
    return browser


def open_customer(browser, url: str) -> None:
    browser.get(url)
    WebDriverWait(browser, 10).until(lambda driver: "Customer #" in driver.title)


def search(browser, server, text: str) -> None:
    browser.get(f"{server.url}/console/")
    browser.find_element(By.ID, "q").send_keys(text, Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda driver: "Customer #" in driver.title)


# For the screenshot only: the page's column and the graph's scroll box let the picture
# show whole, as a person would see it by scrolling the box.
UNBOX_GRAPH = """
document.querySelector('main').style.maxWidth = 'none';
const box = document.querySelector('.graph-scroll');
box.style.maxHeight = 'none';
box.style.overflow = 'visible';
"""


def shoot_whole_graph(browser, name: str) -> None:
    """The graph at its own size, in a window large enough for it."""
    svg = browser.find_element(By.CSS_SELECTOR, "figure.graph svg")
    width, height = int(svg.get_attribute("width")), int(svg.get_attribute("height"))
    browser.set_window_size(max(1280, width + 100), min(max(900, height + 200), 4000))
    try:
        browser.execute_script(UNBOX_GRAPH)
        figure = browser.find_element(By.CSS_SELECTOR, "figure.graph")
        browser.execute_script("arguments[0].scrollIntoView()", figure)
        figure.screenshot(str(SCREENSHOTS / f"{name}.png"))
    finally:
        browser.set_window_size(1280, 900)


@pytest.mark.parametrize("size", GRAPH_SIZES)
def test_the_graph_labels_every_row_legibly(signed_in, server, row_ids, size):
    browser = signed_in
    open_customer(browser, f"{server.url}/console/contacts/{row_ids[size][0]}")
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg .node")
    assert len(nodes) == size
    labels = browser.find_elements(By.CSS_SELECTOR, "svg .node text.value")
    assert len(labels) == 2 * size  # an e-mail and a phone number each
    assert labels[0].text == f"h{size}-0@family.test"[:11] + "…"  # shortened, the start kept
    assert labels[1].text.startswith("…")  # a phone keeps its end
    # Drawn at its own size: a label is as large on screen at 300 rows as at 5.
    assert labels[0].size["height"] >= 9
    assert browser.execute_script(OVERLAPS) == []
    if size > 50:  # larger than its box: a link scrolls the box to the row
        browser.find_element(By.LINK_TEXT, f"go to row #{row_ids[size][0]}").click()
        primary = browser.find_element(By.ID, f"node-{row_ids[size][0]}")
        assert browser.execute_script(IN_VIEW, primary, ".graph-scroll")
        browser.save_screenshot(str(SCREENSHOTS / f"20-graph-of-{size}-rows-go-to-primary.png"))
    shoot_whole_graph(browser, f"20-graph-of-{size}-rows")


def test_a_search_highlights_the_row_that_matched_and_scrolls_to_it(signed_in, server, row_ids):
    browser = signed_in
    ids = row_ids[50]
    search(browser, server, "H50-41@Family.test")  # normalised: row 41 of the customer
    assert browser.current_url.endswith(f"/console/contacts/{ids[41]}#row-{ids[41]}")
    found = browser.find_elements(By.CSS_SELECTOR, "table.rows tr.found")
    assert [row.get_attribute("id") for row in found] == [f"row-{ids[41]}"]
    assert browser.execute_script(IN_VIEW, found[0], ".scroll-box")
    primary_row = browser.find_element(By.ID, f"row-{ids[0]}")
    assert "found" not in primary_row.get_attribute("class")
    assert browser.find_elements(By.CSS_SELECTOR, "svg .node.found")  # marked in the graph too
    browser.save_screenshot(str(SCREENSHOTS / "21-search-found-row-41-of-50.png"))


def test_a_customer_of_700_rows_is_paged(signed_in, server, row_ids):
    browser = signed_in
    ids = row_ids[PAGED_SIZE]
    open_customer(browser, f"{server.url}/console/contacts/{ids[0]}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.rows tbody tr")) == 300
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg .node")) == 300
    rows_pager = browser.find_element(By.CSS_SELECTOR, "nav.pager[aria-label='Pages of rows']")
    assert "1–300 of 700" in rows_pager.text and "page 1 of 3" in rows_pager.text
    history = browser.find_elements(By.CSS_SELECTOR, ".timeline li")
    assert len(history) == 100
    assert f"Row #{ids[-1]} added" in history[0].text  # newest first
    browser.save_screenshot(str(SCREENSHOTS / "22-paged-customer-first-page.png"))

    rows_pager.find_element(By.LINK_TEXT, "Next ›").click()
    WebDriverWait(browser, 10).until(lambda driver: "rows=2" in driver.current_url)
    first_row = browser.find_element(By.CSS_SELECTOR, "table.rows tbody tr")
    assert first_row.get_attribute("id") == f"row-{ids[300]}"
    history_pager = browser.find_element(
        By.CSS_SELECTOR, "nav.pager[aria-label='Pages of history']"
    )
    history_pager.find_element(By.LINK_TEXT, "Last »").click()
    WebDriverWait(browser, 10).until(lambda driver: "history=7" in driver.current_url)
    assert "rows=2" in browser.current_url  # the rows keep their page
    history = browser.find_elements(By.CSS_SELECTOR, ".timeline li")
    assert f"Row #{ids[0]} created" in history[-1].text  # the oldest event, last
    browser.save_screenshot(str(SCREENSHOTS / "23-paged-customer-rows-2-history-7.png"))

    search(browser, server, f"h{PAGED_SIZE}-650@family.test")
    found = browser.find_element(By.CSS_SELECTOR, "table.rows tr.found")
    assert found.get_attribute("id") == f"row-{ids[650]}"
    assert "601–700 of 700" in browser.find_element(By.CSS_SELECTOR, "nav.pager").text
    assert browser.execute_script(IN_VIEW, found, ".scroll-box")
    browser.save_screenshot(str(SCREENSHOTS / "24-search-found-row-650-of-700.png"))
