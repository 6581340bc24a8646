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


def test_nothing_sent_leaves_no_new_value_behind():
    workload = Workload(seed=3, customers=50)
    known = {value for customer in workload.customers for value in customer.emails}
    workload.checkouts(1_000)
    workload.keep(0)
    assert workload.fresh == 0
    assert {value for customer in workload.customers for value in customer.emails} == known
    assert len(workload.customers) == 50
