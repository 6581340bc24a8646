"""One batch of orders = one transaction, with the locks /identify takes.

The protocol is /identify's (identity.customers.reconcile), for many values at once:

1. BEGIN, lock every value of the batch (in /identify's key order), read the values'
   owners (the primaries of the customers holding them) and link the batch in memory.
   A batch that changes nothing (every value known, no customers to merge: a re-run,
   say) rolls back here.
2. Lock the primaries read in step 1, in id order, and read the owners again. Anything
   different (a checkout committed between the read and the locks) would need a lock
   out of order: roll back and start the batch again, as /identify does.
3. Reserve the new rows' ids, COPY the rows, record their history events, demote the
   primaries that lost, COMMIT.

Holding every value's lock and every touched primary's lock, nothing the batch decided
on can change before it commits; a checkout touching the same values waits for the
batch (a few hundred milliseconds at most), then sees its rows.
"""

from operator import attrgetter

import psycopg2

from identity.database import transaction

from . import repository
from .linker import BatchLinker, BatchPlan, Owner
from .orders import Order

# New rows before the first ANALYZE of an import (see Loader._keep_statistics).
ANALYZE_AFTER_ROWS = 2000


class BatchFailed(Exception):
    """The batch could not commit within its retry budget (the import stops, exit 2)."""


class _PrimariesChanged(transaction.RetryTransaction):
    """A checkout committed between the batch's read and its primary locks."""


class Loader:
    def __init__(self, conn, request_id: str, retry_budget: int):
        self.conn = conn
        self.request_id = request_id
        self.retry_budget = retry_budget
        with conn.cursor() as cur:
            self._rows_at_analyze = repository.estimated_rows(cur)
        self._rows_since_analyze = 0

    def load(self, orders: list[Order]) -> BatchPlan:
        """Import one batch, oldest order first (file order among equal times)."""
        orders = sorted(orders, key=attrgetter("created_at"))
        emails = sorted({order.email for order in orders if order.email is not None})
        phone_numbers = sorted(
            {order.phone_number for order in orders if order.phone_number is not None}
        )
        try:
            plan = transaction.run(
                lambda: self._attempt(orders, emails, phone_numbers),
                budget=self.retry_budget,
                rollback=self._rollback,
                pause_cap_s=1.0,
            )
        except transaction.GaveUp:
            raise BatchFailed() from None
        self._keep_statistics(len(plan.new_rows))
        return plan

    def _attempt(self, orders, emails, phone_numbers) -> BatchPlan:
        with self.conn.cursor() as cur:
            owners = repository.begin_and_lock_values(cur, emails, phone_numbers)
            orphans = _orphans(cur, owners)
            plan = _link(owners, orphans, orders)
            if plan.changes_nothing:
                transaction.rollback(cur)  # nothing to write; releases the value locks
                return plan
            roots = sorted({owner.root_id for owner in owners})
            again = repository.lock_primaries(cur, emails, phone_numbers, roots)
            if set(again) != set(owners) or _orphans(cur, again) != orphans:
                # A checkout committed between our read and our primary locks: its new
                # primary would have to be locked out of order. Start again.
                raise _PrimariesChanged()
            if plan.relinks:
                repository.relink_orphans(cur, plan.relinks, self.request_id)
            self._write(cur, plan)
            return plan

    def _write(self, cur, plan: BatchPlan) -> None:
        real_ids = dict(
            zip(
                (row.provisional_id for row in plan.new_rows),
                repository.reserve_ids(cur, len(plan.new_rows)) if plan.new_rows else [],
                strict=True,
            )
        )

        def final_primary(row_id: int) -> int:
            primary = plan.links[row_id]
            return real_ids.get(primary, primary)

        contacts = []
        for row in plan.new_rows:
            row_id, primary_id = real_ids[row.provisional_id], final_primary(row.provisional_id)
            is_primary = row_id == primary_id
            contacts.append(
                (
                    row_id,
                    row.email,
                    row.phone_number,
                    None if is_primary else primary_id,
                    "primary" if is_primary else "secondary",
                    row.created_at,
                )
            )
        if contacts:
            repository.copy_contacts(cur, contacts)
        demotions = [
            (loser, final_primary(loser), email, phone_number)
            for loser, (email, phone_number) in sorted(plan.demoted.items())
        ]
        repository.record_and_commit(cur, list(real_ids.values()), demotions, self.request_id)

    def _keep_statistics(self, new_rows: int) -> None:
        """ANALYZE whenever the import has grown the table by half of what the planner
        last knew (at least ANALYZE_AFTER_ROWS rows): about ten times for a million rows
        into an empty table, and plans always made for the table's real size."""
        self._rows_since_analyze += new_rows
        if self._rows_since_analyze >= max(ANALYZE_AFTER_ROWS, self._rows_at_analyze // 2):
            with self.conn.cursor() as cur:
                repository.analyze(cur)
                self._rows_at_analyze = repository.estimated_rows(cur)
            self._rows_since_analyze = 0

    def _rollback(self) -> None:
        try:
            with self.conn.cursor() as cur:
                transaction.rollback(cur)
        except psycopg2.Error:
            pass  # a broken connection: the next statement says so


def _orphans(cur, owners: list[Owner]) -> list:
    """The orphans of the deleted primaries the owners lead to (SPEC §2); no round trip
    when there are none, as nearly always."""
    deleted_roots = sorted({owner.root_id for owner in owners if owner.primary_id is None})
    return repository.orphan_rows(cur, deleted_roots) if deleted_roots else []


def _link(owners: list[Owner], orphans: list, orders: list[Order]) -> BatchPlan:
    linker = BatchLinker(owners, orphans)
    for order in orders:
        linker.add(order)
    return linker.plan()
