"""The kinds of history event, and the feed event each becomes: the one definition.

contact_event.kind holds a history kind (its CHECK constraint, contact_event_kind_valid,
names the same list: tests/test_event_kinds.py compares them). The history answer
(GET /contacts/<id>/history), the change feed (GET /events, the webhooks), their OpenAPI
schemas and the feed's query all derive their lists from here. Plain strings, not an
enum: they go to the database and into JSON as they are.
"""

# In the order the history of docs/api.md introduces them.
HISTORY_KINDS: tuple[str, ...] = (
    "customer_created",  # a new primary
    "secondary_added",  # a new secondary of an existing customer
    "primary_demoted",  # a checkout bridged two customers: a primary became a secondary
    "rows_repointed",  # the secondaries that followed a demoted primary
    "customer_split",  # a detach broke a customer in two (SPEC §9)
    "value_detached",  # a value was taken off a row (SPEC §9)
    "customer_erased",  # a customer's values were erased (SPEC §9)
    "hub_suspected",  # a value suspected of gluing strangers together
)

# rows_repointed stays out of the feed: the customers_merged event made from the same
# transaction's primary_demoted row already says that the rows moved.
_NOT_IN_FEED = frozenset({"rows_repointed"})
# The feed names a merge by what it means to a consumer; other kinds keep their name.
_FEED_NAME = {"primary_demoted": "customers_merged"}

# The history kinds the feed's query reads.
FEED_SOURCE_KINDS: list[str] = [kind for kind in HISTORY_KINDS if kind not in _NOT_IN_FEED]


def feed_kind(history_kind: str) -> str:
    """The kind a feed event made from a history row of history_kind carries."""
    return _FEED_NAME.get(history_kind, history_kind)


# Every kind a feed event can carry.
FEED_KINDS: list[str] = [feed_kind(kind) for kind in FEED_SOURCE_KINDS]
