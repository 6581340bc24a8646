"""The support console in a real browser: sign-in, search, the customer page with its
graph, a detach that splits the customer, an erasure, sign-out, and a phone-sized screen.
Every page is saved as a screenshot in .screenshots/ for a person to look at."""

import http.client

import pytest
from conftest import SCREENSHOTS, SUPPORT_TOKEN
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait
from servers import post_identify

# A story with a merge: rows 1-2 share a phone, rows 3-4 another; the fifth checkout joins
# the two customers (3 becomes a secondary of 1); row 5 joins through the first phone.
STORY = [
    {"email": "lorraine@hillvalley.edu", "phoneNumber": "+1 555 0100"},
    {"email": "mcfly@hillvalley.edu", "phoneNumber": "+1 555 0100"},
    {"email": "george@hillvalley.edu", "phoneNumber": "919191"},
    {"email": "biff@hillvalley.edu", "phoneNumber": "919191"},
    {"email": "mcfly@hillvalley.edu", "phoneNumber": "919191"},
    {"email": "doc@hillvalley.edu", "phoneNumber": "+1 555 0100"},
]
# A long customer: each checkout brings one new value and shares the other with the row
# before it, so the rows form one chain 150 steps long: the hardest shape to lay out.
CHAIN_LENGTH = 150


# A hub: one shop phone number typed at the till for 300 different people.
HUB_SIZE = 300


def hub_checkouts():
    for n in range(HUB_SIZE):
        yield {"email": f"walk-in{n}@shop.test", "phoneNumber": "+44 20 7946 9999"}


def chain_checkouts():
    for n in range(CHAIN_LENGTH):
        yield {"email": f"r{(n + 1) // 2}@shop.test", "phoneNumber": f"+44 20 7946 {n // 2:04d}"}


@pytest.fixture(scope="module")
def customers(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    customers = {}
    seeds = {"story": STORY, "chain": chain_checkouts(), "hub": hub_checkouts()}
    for name, checkouts in seeds.items():
        answers = [post_identify(connection, body) for body in checkouts]
        assert all(status == 200 for status, _, _ in answers)
        customers[name] = answers[-1][2]["contact"]
    connection.close()
    assert len(customers["chain"]["secondaryContactIds"]) == CHAIN_LENGTH - 1
    assert len(customers["hub"]["secondaryContactIds"]) == HUB_SIZE - 1
    return {name: contact["primaryContactId"] for name, contact in customers.items()}


def shoot(browser, name: str) -> None:
    """Save the whole page, not only the window, as .screenshots/<name>.png."""
    browser.execute_script("window.scrollTo(0, 0)")
    width = browser.get_window_size()["width"]
    height = browser.execute_script("return document.documentElement.scrollHeight")
    original = browser.get_window_size()
    browser.set_window_size(width, min(max(height, 400), 8000))
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    browser.set_window_size(original["width"], original["height"])


def shoot_graph(browser, name: str) -> None:
    """The graph alone, at full size."""
    graph = browser.find_element(By.CSS_SELECTOR, "figure.graph")
    browser.execute_script("arguments[0].scrollIntoView()", graph)
    graph.screenshot(str(SCREENSHOTS / f"{name}.png"))


def wait_for_title(browser, fragment: str) -> None:
    WebDriverWait(browser, 10).until(lambda driver: fragment in driver.title)


def error_text(browser) -> str:
    """The page's error message, once it is there: a form answered on a page of the same
    title as the form's own, so waiting for the title alone can still see the old page."""
    found = WebDriverWait(browser, 10).until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, ".error")
    )
    return found[0].text


def heading(browser) -> str:
    return browser.find_element(By.TAG_NAME, "h1").text


def sign_in(browser, server, token: str) -> None:
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token, Keys.ENTER)  # the keyboard alone submits the form


def test_a_support_person_works_through_the_console(browser, server, customers):
    browser.set_window_size(1280, 900)
    browser.get(f"{server.url}/console")
    wait_for_title(browser, "Sign in")
    assert browser.find_element(By.ID, "token").get_attribute("type") == "password"
    # The style sheet loads under the Content-Security-Policy: the header is coloured.
    header = browser.find_element(By.CSS_SELECTOR, "header.top")
    assert header.value_of_css_property("background-color") == "rgba(30, 64, 175, 1)"
    shoot(browser, "01-sign-in")

    sign_in(browser, server, "not-the-token")
    wait_for_title(browser, "Sign in")
    assert "not a valid support token" in error_text(browser)
    shoot(browser, "02-sign-in-wrong-token")

    sign_in(browser, server, SUPPORT_TOKEN)
    wait_for_title(browser, "Search")
    assert heading(browser) == "Find a customer"
    assert browser.switch_to.active_element.get_attribute("id") == "q"  # ready to type
    shoot(browser, "03-search")

    browser.find_element(By.ID, "q").send_keys("  Lorraine@HillValley.EDU ", Keys.ENTER)
    story = customers["story"]
    wait_for_title(browser, f"Customer #{story}")
    table_rows = browser.find_elements(By.CSS_SELECTOR, "table.rows tbody tr")
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg .node")
    assert len(table_rows) == len(STORY) - 1 == len(nodes)  # the fifth checkout added no row
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg .node.primary")) == 1
    history = browser.find_elements(By.CSS_SELECTOR, ".timeline li")
    assert any("merged into" in item.text for item in history)
    shoot_graph(browser, "04-customer-graph")
    shoot(browser, "04-customer")

    Select(browser.find_element(By.ID, "detach-value")).select_by_visible_text("919191")
    browser.find_element(By.CSS_SELECTOR, "label[for=detach-block]").click()
    browser.find_element(By.XPATH, "//button[.='Review detach…']").click()
    wait_for_title(browser, "Confirm detach")
    assert "919191" in heading(browser)
    shoot(browser, "05-detach-confirm")
    browser.find_element(By.XPATH, "//button[.='Detach and block']").click()
    wait_for_title(browser, "Value detached")
    # 919191 bridged george and biff to the rest: without it they are customers of their own.
    assert len(browser.find_elements(By.CSS_SELECTOR, "ul.customers > li")) == 3
    shoot(browser, "06-detach-split")

    browser.get(f"{server.url}/console/contacts/{story}")
    browser.find_element(By.LINK_TEXT, "Review erasure…").click()
    wait_for_title(browser, "Confirm erasure")
    browser.find_element(By.ID, "confirm-id").send_keys("999", Keys.ENTER)
    wait_for_title(browser, "Confirm erasure")
    assert f"Type {story} to confirm" in error_text(browser)
    shoot(browser, "07-erase-confirm-wrong-number")
    browser.find_element(By.ID, "confirm-id").send_keys(str(story), Keys.ENTER)
    wait_for_title(browser, "Customer erased")
    assert heading(browser) == f"Customer #{story} erased"
    shoot(browser, "08-erase-done")
    browser.get(f"{server.url}/console/contacts/{story}")
    wait_for_title(browser, "No such customer")

    browser.get(f"{server.url}/console/contacts/{customers['chain']}")
    wait_for_title(browser, "Customer #")
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg .node")) == CHAIN_LENGTH
    shoot_graph(browser, "09-customer-of-150-rows-graph")
    shoot(browser, "09-customer-of-150-rows")

    browser.get(f"{server.url}/console/contacts/{customers['hub']}")
    wait_for_title(browser, "Customer #")
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg .node")) == HUB_SIZE
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg .edge")) == HUB_SIZE - 1
    shoot_graph(browser, "10-customer-of-300-rows-on-one-phone-graph")
    # By keyboard, the corrections are a few Tab presses from the search box: the graph's
    # 300 circles are not tab stops (the table says the same). On the way: the search
    # button, "go to row", the picture's and the table's scroll boxes, the history's
    # pager (300 events: three pages) and its scroll box.
    browser.find_element(By.ID, "q").click()
    stops = []
    for _ in range(10):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        stops.append(browser.switch_to.active_element.get_attribute("id"))
    assert "detach-value" in stops and "detach-block" in stops

    browser.find_element(By.XPATH, "//button[.='Sign out']").click()
    wait_for_title(browser, "Sign in")
    browser.get(f"{server.url}/console/")
    wait_for_title(browser, "Sign in")


def test_the_console_fits_a_phone_screen(browser, server, customers):
    browser.set_window_size(390, 844)
    try:
        browser.get(f"{server.url}/console/sign-in")
        if browser.find_elements(By.ID, "token"):
            sign_in(browser, server, SUPPORT_TOKEN)
            wait_for_title(browser, "Search")
        # The story customer was erased by the walk-through; the long chain remains.
        browser.get(f"{server.url}/console/contacts/{customers['chain']}")
        wait_for_title(browser, "Customer #")
        # Nothing wider than the screen but the rows table, which scrolls inside its box.
        page_width = browser.execute_script("return document.documentElement.scrollWidth")
        screen_width = browser.execute_script("return window.innerWidth")
        assert page_width <= screen_width
        shoot(browser, "11-customer-on-a-phone")
    finally:
        browser.set_window_size(1280, 900)
