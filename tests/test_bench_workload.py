"""`make bench`'s workload: every measured phase sends the mix it documents.

A phase draws more checkouts than it has time to send; the new values and bridges of
those never sent must not stay in the workload, or the next phase's "repeats" bring
values the database has never seen and merge customers it never linked."""

from bench import Workload


def test_keep_forgets_the_checkouts_never_sent():
    drawn = Workload(seed=3)
    drawn.checkouts(500)
    drawn.keep(40)
    after_keep = drawn.checkouts(200)

    sent_only = Workload(seed=3)
    sent_only.checkouts(40)
    assert after_keep == sent_only.checkouts(200)


def test_keep_keeps_customers_that_bridges_made_one():
    """Bridges make two customers share their lists of values: the copy taken before a
    draw must keep them shared, or a later new value reaches only one of the two."""
    drawn = Workload(seed=3, customers=50)
    drawn.checkouts(3_000)
    drawn.keep(3_000)
    drawn.checkouts(2_000)
    drawn.keep(100)
    after_keep = drawn.checkouts(2_000)

    sent_only = Workload(seed=3, customers=50)
    sent_only.checkouts(3_100)
    assert after_keep == sent_only.checkouts(2_000)


def _values(workload: Workload) -> list[tuple[list[str], list[str]]]:
    return [(customer.emails[:], customer.phones[:]) for customer in workload.customers]


def test_nothing_sent_leaves_no_new_value_behind():
    workload = Workload(seed=3, customers=50)
    known = _values(workload)
    workload.checkouts(1_000)
    workload.keep(0)
    assert workload.fresh == 0
    assert _values(workload) == known
