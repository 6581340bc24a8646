"""Changing PHONE_REGION on a database that holds customers (SPEC §4): `renormalise`.

Stored phone numbers are rewritten to the form the new setting gives them
(normalise.to_e164), one phone at a time: the phone's stored spellings
(07700900123, 00447700900123, ...) become its normal form (+447700900123) in one
transaction, and the customers that now share it are merged by SPEC §5's rule: the
oldest primary survives, the others are demoted and their rows re-pointed, with the
same history events (primary_demoted, rows_repointed; customers_merged in the feed) as a
checkout that bridges them.

Next to live traffic: each phone's transaction first takes the advisory locks a checkout
takes (repository.lock_all): the values' locks, the normal form's and every spelling's,
then the locks of the customers it saw, in the same global order, so a checkout and the
rewrite never interleave on one customer. A customer that appeared in between (seen
under the locks, not before) makes the phone start again.

Resumable: each phone commits on its own, and a stored value already in its normal form
is left alone, so a run that stops anywhere is completed by running it again; a second
complete run changes nothing.

Rows that the rewrite leaves holding only values their customer already had stay, as
secondaries: nothing the service stores is dropped by a change of setting.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from identity.database import transaction

from . import linking, phones_repository, repository
from .model import ContactRow
from .normalise import to_e164


@dataclass(frozen=True)
class Respelling:
    """One phone: its normal form and the stored spellings that become it."""

    phone_number: str
    spellings: tuple[str, ...]


@dataclass(frozen=True)
class Merge:
    """Customers that share a phone once it is respelt: survivor_id stays primary."""

    survivor_id: int
    demoted_ids: tuple[int, ...]


@dataclass
class Report:
    phones: int = 0  # phones whose stored spellings were (or would be) rewritten
    rows: int = 0  # live rows rewritten (or to rewrite)
    deleted_rows: int = 0  # soft-deleted rows rewritten
    merges: list[Merge] = field(default_factory=list)


class CustomerChanged(transaction.RetryTransaction):
    """A customer the rewrite had not seen appeared before its locks: start the phone again."""


class TooManyConflicts(Exception):
    """A phone could not be rewritten within the retry budget; running again resumes."""


def respellings(conn, region: str) -> list[Respelling]:
    """Every stored phone number whose normal form under `region` differs, by phone."""
    spellings: dict[str, list[str]] = {}
    for stored in phones_repository.stored_phone_numbers(conn):
        normal = to_e164(stored, region)
        if normal != stored:
            spellings.setdefault(normal, []).append(stored)
    return [Respelling(normal, tuple(sorted(old))) for normal, old in sorted(spellings.items())]


def renormalise(
    conn,
    region: str,
    request_id: str,
    dry_run: bool = False,
    retry_budget: int = 20,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Report:
    """Rewrite every stored phone number to its form under `region` and merge the
    customers that then share one. conn: autocommit (database.connections.connect). With
    dry_run, report what would change, change nothing."""
    report = Report()
    todo = respellings(conn, region)
    for done, respelling in enumerate(todo, 1):
        if dry_run:
            rows = _customers_holding(conn, respelling)
            merge = _merge_plan(_respelt(rows, respelling), respelling.phone_number)[0]
        else:
            rows, merge = _with_retries(conn, respelling, request_id, retry_budget)
        _tally(report, rows, respelling, merge)
        report.phones += 1
        progress(done, len(todo))
    if not dry_run:
        new_forms = {old: r.phone_number for r in todo for old in r.spellings}
        report.deleted_rows = phones_repository.respell_deleted_rows(conn, new_forms)
    return report


def _tally(report: Report, rows: list[ContactRow], respelling: Respelling, merge) -> None:
    report.rows += sum(1 for row in rows if row.phone_number in respelling.spellings)
    if merge is not None:
        report.merges.append(merge)


def _with_retries(conn, respelling: Respelling, request_id: str, retry_budget: int):
    """_rewrite under the one retry policy (CustomerChanged is a RetryTransaction)."""

    def rollback() -> None:
        with conn.cursor() as cur:
            transaction.rollback(cur)

    try:
        return transaction.run(
            lambda: _rewrite(conn, respelling, request_id),
            budget=retry_budget,
            rollback=rollback,
            pause_cap_s=1.0,
        )
    except transaction.GaveUp:
        raise TooManyConflicts() from None


def _rewrite(
    conn, respelling: Respelling, request_id: str
) -> tuple[list[ContactRow], Merge | None]:
    """One phone in one transaction: lock, read again, rewrite, merge, commit."""
    seen = _customers_holding(conn, respelling)
    seen_roots = {customer.root_id for customer in linking.customers(seen)}
    values = [respelling.phone_number, *respelling.spellings]
    keys = sorted({key for value in values for key in repository.value_lock_keys(None, value)})
    # BEGIN and the locks. A value on the stored blocklist changes nothing here: its
    # entry is respelt with the rows, and rows that share a phone must share a customer.
    repository.lock_all(conn, keys, list(seen_roots))
    rows = _customers_holding(conn, respelling)
    if not {customer.root_id for customer in linking.customers(rows)} <= seen_roots:
        raise CustomerChanged()  # locking it now could break the lock order
    phones_repository.respell(conn, respelling.phone_number, list(respelling.spellings))
    merge, relinks = _merge_plan(_respelt(rows, respelling), respelling.phone_number)
    demotion = (
        {"survivor_id": merge.survivor_id, "loser_ids": list(merge.demoted_ids)} if merge else None
    )
    # The history of the merge names the phone that bridged the customers, as a
    # checkout's would.
    request = {"email": None, "phone_number": respelling.phone_number, "request_id": request_id}
    repository.write_and_commit(conn, request, relinks, demotion, None, insert=False)
    return rows, merge


def _customers_holding(conn, respelling: Respelling) -> list[ContactRow]:
    """The live rows of every customer holding the phone in any of its spellings."""
    found: dict[int, ContactRow] = {}
    for value in (respelling.phone_number, *respelling.spellings):
        found.update((row.id, row) for row in repository.find_customer(conn, None, value))
    return sorted(found.values(), key=linking.creation_order)


def _respelt(rows: list[ContactRow], respelling: Respelling) -> list[ContactRow]:
    """The rows as the rewrite leaves their values."""
    return [
        row._replace(phone_number=respelling.phone_number)
        if row.phone_number in respelling.spellings
        else row
        for row in rows
    ]


def _merge_plan(rows: list[ContactRow], phone_number: str) -> tuple[Merge | None, dict]:
    """SPEC §5.2 for customers that now share phone_number: the oldest primary survives.
    Also the links of orphans among them, stored as reads present them (see reconcile)."""
    touched = linking.touched(linking.customers(rows), None, phone_number)
    relinks = {
        row_id: linked_id for customer in touched for row_id, linked_id in customer.relinks.items()
    }
    if len(touched) < 2:
        return None, relinks
    demoted = tuple(customer.primary.id for customer in touched[1:])
    return Merge(touched[0].primary.id, demoted), relinks
