"""The console's routes: check access and the CSRF token, call one function, render a page.

Searches are POSTed, never put in the URL: an e-mail or phone number in a query string
would land in browser histories and proxy logs. Pages are addressed by contact id.
"""

from dataclasses import dataclass
from datetime import UTC

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from identity.customers import corrections, lookups
from identity.customers.model import consolidate
from identity.database.connections import DatabaseUnavailable, run_unit
from identity.web import access

from . import auth
from .graph import layout
from .paging import EVENTS_PER_PAGE, ROWS_PER_PAGE, Page, page_count, page_holding, page_of
from .search import SearchError, search

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)
_CONTACT = "/contacts/<contact_id:contact_id>"  # ASCII digits only (api.ContactIdConverter)
# The detach form names a value as "<kind>:<value>"; kind → the row's attribute.
_VALUE_KINDS = {"email": "email", "phone": "phone_number"}
# The row's attribute → the kind of value corrections.detach takes (SPEC §9's field name).
_DETACH_KINDS = {"email": "email", "phone_number": "phoneNumber"}


class PageError(Exception):
    """A refusal the console explains on a page of its own."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(title)
        self.status, self.title, self.message = status, title, message


@bp.errorhandler(access.AccessDenied)
def access_denied(_error):
    """access.py refused the page (SPEC §8): sign in, or this machine only."""
    if auth.sign_in_required():
        return redirect(url_for("console.sign_in"), 303)
    return _error_page(
        401,
        "Local access only",
        "No support token is configured, so the console serves this machine only. "
        "Set SUPPORT_TOKENS to sign in from elsewhere.",
    )


@bp.before_request
def check_csrf():
    """Runs after access.py has let the request in."""
    if request.method == "POST" and not auth.csrf_valid():
        raise PageError(
            400,
            "Form expired",
            "This form's security token is missing or out of date, so nothing was changed. "
            "Go back, reload the page and try again.",
        )
    return None


@bp.context_processor
def page_globals():
    return {
        "csrf_field": auth.CSRF_FIELD,
        "csrf_token": auth.csrf_token,
        "token_id": auth.token_id() if auth.signed_in() else None,
        "local_access": not auth.sign_in_required(),
    }


@bp.app_template_filter("utc")
def utc(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.route("/sign-in", methods=["GET", "POST"])
@access.open_route  # the sign-in form: it grants the support role to a valid token
def sign_in():
    if not auth.sign_in_required():
        return redirect(url_for("console.home"), 303)  # loopback access needs no sign-in
    if request.method == "POST":
        if auth.sign_in(request.form.get("token", "")):
            return redirect(url_for("console.home"), 303)
        return render_template("sign_in.html", error="That is not a valid support token."), 401
    if auth.signed_in():
        return redirect(url_for("console.home"), 303)
    return render_template("sign_in.html")


@bp.post("/sign-out")
@access.role("support", proof=auth.session_token_digest)
def sign_out():
    auth.sign_out()
    target = "console.sign_in" if auth.sign_in_required() else "console.home"
    return redirect(url_for(target), 303)


@bp.get("/")
@access.role("support", proof=auth.session_token_digest)
def home():
    return render_template("search.html")


@bp.post("/search")
@access.role("support", proof=auth.session_token_digest)
def find():
    text = request.form.get("q", "")
    schema = current_app.extensions["identity_request_schema"]
    current_app.extensions["identity_blocklist"].refresh_if_stale()  # outside validation
    try:
        matches = run_unit(lambda conn: search(conn, schema, text))
    except SearchError as error:
        return render_template("search.html", query=text, error=error.message), 400
    if len(matches) == 1:
        return redirect(_customer_url(matches[0].contact_id), 303)
    status = 200 if matches else 404
    return render_template("search.html", query=text, matches=matches, searched=True), status


def _customer_url(contact_id: int) -> str:
    """The customer's page with the row scrolled into view (and highlighted: .found)."""
    return url_for("console.customer", contact_id=contact_id, _anchor=f"row-{contact_id}")


def _customer_rows(contact_id: int):
    return run_unit(lambda conn: lookups.customer_rows(conn, contact_id))


@bp.get("/hubs")
@access.role("support", proof=auth.session_token_digest)
def hubs():
    return render_template("hubs.html", hubs=run_unit(lookups.suspected_hubs))


@bp.get(_CONTACT)
@access.role("support", proof=auth.session_token_digest)
def customer(contact_id: int):
    """One page of rows (by default the page of the row asked for), one page of the
    history (newest first), and the graph of the page's rows."""
    rows, history, history_number = _rows_and_history(
        contact_id, max(1, request.args.get("history", type=int) or 1)
    )
    position = next(index for index, row in enumerate(rows) if row.id == contact_id)
    rows_page = page_of(
        rows,
        request.args.get("rows", type=int) or page_holding(position, ROWS_PER_PAGE),
        ROWS_PER_PAGE,
    )
    return render_template(
        "customer.html",
        contact_id=contact_id,
        rows=rows_page,
        customer=summary_of(rows),
        page_values=_values_of(rows_page.items),
        graph=layout(rows_page.items, history.merges),
        history=Page(
            history.events,
            history_number,
            page_count(history.size, EVENTS_PER_PAGE),
            history.size,
            history.offset,
        ),
    )


def _rows_and_history(contact_id: int, history_number: int):
    """The customer's rows and page history_number of its history, or its last page
    when there are fewer (a stale link: one more read)."""
    offset = (history_number - 1) * EVENTS_PER_PAGE
    rows, history = run_unit(
        lambda conn: lookups.customer_with_history_page(conn, contact_id, offset, EVENTS_PER_PAGE)
    )
    last = page_count(history.size, EVENTS_PER_PAGE)
    if history_number > last:
        return _rows_and_history(contact_id, last)
    return rows, history, history_number


@dataclass(frozen=True)
class Summary:
    """What the customer page says of the whole customer: cheaper than consolidate's
    ordered lists for a customer of thousands of rows."""

    primary_contact_id: int
    emails: int
    phone_numbers: int


def summary_of(rows) -> Summary:
    primary = next(row for row in rows if row.is_primary)
    emails = {row.email for row in rows} - {None}
    phone_numbers = {row.phone_number for row in rows} - {None}
    return Summary(primary.id, len(emails), len(phone_numbers))


def _values_of(rows) -> dict[str, list[str]]:
    """The distinct e-mails and phone numbers of some rows, oldest first (the detach
    form offers the values of the rows on the page)."""
    return {
        "emails": list(dict.fromkeys(row.email for row in rows if row.email is not None)),
        "phone_numbers": list(
            dict.fromkeys(row.phone_number for row in rows if row.phone_number is not None)
        ),
    }


def _chosen_value(rows) -> tuple[str, str]:
    """The (attribute, value) the detach form names; it must be one of the customer's."""
    kind, _, value = request.form.get("value", "").partition(":")
    attribute = _VALUE_KINDS.get(kind)
    if attribute is None or not value:
        raise PageError(400, "No value chosen", "Choose an e-mail or a phone number to detach.")
    if not any(getattr(row, attribute) == value for row in rows):
        raise PageError(
            409,
            "Value not in this customer",
            "The customer no longer holds that value; it may have been detached already.",
        )
    return attribute, value


@bp.post(f"{_CONTACT}/detach/review")
@access.role("support", proof=auth.session_token_digest)
def review_detach(contact_id: int):
    rows = _customer_rows(contact_id)
    attribute, value = _chosen_value(rows)
    return render_template(
        "detach_confirm.html",
        contact_id=contact_id,
        customer=consolidate(rows),
        attribute=attribute,
        value=value,
        form_value=request.form["value"],
        carriers=[row for row in rows if getattr(row, attribute) == value],
        block=request.form.get("block") == "yes",
    )


@bp.post(f"{_CONTACT}/detach")
@access.role("support", proof=auth.session_token_digest)
def detach(contact_id: int):
    if request.form.get("confirm") != "yes":
        raise PageError(400, "Not confirmed", "A detach needs its confirmation step first.")
    attribute, value = _chosen_value(_customer_rows(contact_id))
    kind, block = _DETACH_KINDS[attribute], request.form.get("block") == "yes"
    customers = run_unit(
        lambda conn: corrections.detach(conn, contact_id, kind, value, block, g.request_id)
    )
    if block:
        current_app.extensions["identity_blocklist"].expire()  # as the API does
    return render_template("detach_done.html", customers=customers)


@bp.get(f"{_CONTACT}/erase")
@access.role("support", proof=auth.session_token_digest)
def review_erase(contact_id: int):
    return _erase_confirmation(contact_id, _customer_rows(contact_id))


def _erase_confirmation(contact_id: int, rows, error: str | None = None, status: int = 200):
    page = render_template(
        "erase_confirm.html",
        contact_id=contact_id,
        rows=rows,
        customer=consolidate(rows),
        error=error,
    )
    return page, status


@bp.post(f"{_CONTACT}/erase")
@access.role("support", proof=auth.session_token_digest)
def erase(contact_id: int):
    rows = _customer_rows(contact_id)
    primary_id = consolidate(rows).primary_contact_id
    if request.form.get("confirm_id", "").strip().lstrip("#") != str(primary_id):
        return _erase_confirmation(
            contact_id, rows, f"Type {primary_id} to confirm; nothing was erased.", 400
        )
    erased = run_unit(lambda conn: corrections.erase(conn, contact_id, g.request_id))
    return render_template("erase_done.html", erased=erased)


def _error_page(status: int, title: str, message: str):
    # A refused step on a customer's page leads back to that customer.
    contact_id = (request.view_args or {}).get("contact_id")
    back = None
    if contact_id and status != 404:
        back = url_for("console.customer", contact_id=contact_id)
    return render_template("error.html", title=title, message=message, back=back), status


@bp.errorhandler(PageError)
def page_error(error: PageError):
    return _error_page(error.status, error.title, error.message)


@bp.errorhandler(lookups.NotFound)
def not_found(_error):
    return _error_page(404, "No such customer", "No live contact has that id.")


@bp.errorhandler(corrections.ValueNotInCustomer)
def value_not_in_customer(_error):
    return _error_page(
        409,
        "Value not in this customer",
        "The customer no longer holds that value; it may have been detached already.",
    )


@bp.errorhandler(DatabaseUnavailable)
def database_unavailable(_error):
    page, status = _error_page(
        503, "Database unavailable", "The database did not answer. Try again in a moment."
    )
    return page, status, {"Retry-After": str(current_app.config["RETRY_AFTER_S"])}


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException):
    response = error.get_response()  # keeps headers such as Allow
    page, status = _error_page(error.code or 500, error.name, error.description or "")
    response.set_data(page)
    response.content_type = "text/html; charset=utf-8"
    return response
