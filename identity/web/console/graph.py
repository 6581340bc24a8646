"""The picture of a customer: a node per row, an edge between rows that share a value.

Coordinates are computed here and drawn as inline SVG by the template, so the page needs
no script. Each node shows its row id in the circle and, under it, its values, shortened
to LABEL_CHARS so that neighbours' labels never touch: node spacing and ring gap leave
room for a label's width, so the picture is as legible at 300 rows as at 5 (it grows
instead, and the page scrolls it). The primary sits in the centre; the other rows fill
concentric rings, inner rings first, each ring clockwise from the top. They are taken in
the order of a walk from the primary in which every row comes right after the row it
hangs from: neighbours land in neighbouring places and most edges stay short. Ring
spacing keeps nodes apart whatever the size of the customer: 300 rows make ten rings.

A value carried by many rows would draw an edge between every two of them (a phone number
on 300 rows: 44,850 edges). Each value is drawn instead as a chain through the rows that
carry it, in the order they are placed: as connected, at most two edges per row and value,
and each edge joins rows placed side by side where it can (a star from the oldest carrier
would send long lines across the labels of every row in between).

Rows can belong to one customer without sharing a value: a checkout whose e-mail was known
to one customer and whose phone number to another merges them without adding a row. The
history records each such merge (primary_demoted), and the graph draws it as an edge of its
own between the demoted primary and the one it joined, so every link has a line.
"""

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from identity.customers.model import ContactRow

NODE_RADIUS = 15
LABEL_CHARS = 12  # a shortened value: about 60 picture units at the label's font size
NODE_SPACING = 88  # between neighbours on a ring, centre to centre: a label and a gap
RING_GAP = 84  # between rings: the labels of a ring clear the next one's
MARGIN = NODE_SPACING // 2 + 8
MIN_DISPLAY_SIZE = 320
CROWDED_DEGREE = 12  # more edges than this at one row, and they cross other rows


@dataclass(frozen=True)
class Node:
    row: ContactRow
    x: float
    y: float

    @property
    def label(self) -> str:
        return str(self.row.id)

    @property
    def value_labels(self) -> list[str]:
        """The row's e-mail and phone number, each shortened (the full values are in
        the node's tooltip and in the table)."""
        labels = [shorten(self.row.email)] if self.row.email else []
        if self.row.phone_number:
            labels.append(shorten(self.row.phone_number, keep="end"))
        return labels


@dataclass(frozen=True)
class Edge:
    kind: str  # "email", "phone", "both" (what the rows share) or "merge" (see above)
    source: Node
    target: Node


@dataclass(frozen=True)
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    size: float  # width and height of the square picture, in picture units

    @property
    def view_box(self) -> str:
        return f"{-self.size / 2:.0f} {-self.size / 2:.0f} {self.size:.0f} {self.size:.0f}"

    @property
    def crowded(self) -> bool:
        """Some row has so many edges that they pass behind other rows (drawn thinner)."""
        degree: Counter[int] = Counter()
        for edge in self.edges:
            degree.update((edge.source.row.id, edge.target.row.id))
        return max(degree.values(), default=0) > CROWDED_DEGREE

    @property
    def display_size(self) -> int:
        """Pixels on screen: a small customer is drawn up to twice as large, to be legible."""
        return round(max(self.size, min(2 * self.size, MIN_DISPLAY_SIZE)))


def shorten(value: str, limit: int = LABEL_CHARS, keep: str = "start") -> str:
    """The value in at most limit characters, an ellipsis standing for the rest: an
    e-mail keeps its start (the name), a phone number its end (the country code and
    area are what numbers of one customer share)."""
    if len(value) <= limit:
        return value
    return value[: limit - 1] + "…" if keep == "start" else "…" + value[1 - limit :]


def _links(rows: list[ContactRow], merges) -> dict[tuple[int, int], set[str]]:
    """(row id, row id) → what links them: the kinds of value they share, and "merge".

    Each value is a chain through its carriers in the order of `rows`; merges between
    rows no longer in the customer are left out."""
    last_carrier: dict[tuple[str, str], int] = {}
    links: dict[tuple[int, int], set[str]] = {}
    for row in rows:
        for kind, value in (("email", row.email), ("phone", row.phone_number)):
            if value is None:
                continue
            previous = last_carrier.get((kind, value))
            last_carrier[(kind, value)] = row.id
            if previous is not None:
                links.setdefault((min(previous, row.id), max(previous, row.id)), set()).add(kind)
    live = {row.id for row in rows}
    for demoted, survivor in merges:
        if demoted in live and survivor in live and demoted != survivor:
            links.setdefault(tuple(sorted((demoted, survivor))), set()).add("merge")
    return links


def _edge_kind(kinds: set[str]) -> str:
    if {"email", "phone"} <= kinds:
        return "both"
    for kind in ("email", "phone"):
        if kind in kinds:
            return kind
    return "merge"


def _walk_order(rows: list[ContactRow], links) -> list[ContactRow]:
    """The rows in the order they are placed: a depth-first walk of the shortest paths
    from the primary, so each row comes right after the row it hangs from, and the rows
    hanging from it follow it.

    Rows no path reaches (possible only in data that breaks the invariants) come last,
    so every row is drawn."""
    by_id = {row.id: row for row in rows}
    neighbours: dict[int, list[int]] = {row.id: [] for row in rows}
    for first, other in links:
        neighbours[first].append(other)
        neighbours[other].append(first)
    start = next((row for row in rows if row.is_primary), rows[0])
    # Breadth first: each row's parent is on a shortest path from the primary.
    children: dict[int, list[int]] = {row.id: [] for row in rows}
    reached = {start.id}
    queue = deque([start.id])
    while queue:
        row_id = queue.popleft()
        for neighbour in sorted(neighbours[row_id]):
            if neighbour not in reached:
                reached.add(neighbour)
                children[row_id].append(neighbour)
                queue.append(neighbour)
    # Then depth first over that tree.
    order, stack = [], [start.id]
    while stack:
        row_id = stack.pop()
        order.append(by_id[row_id])
        stack.extend(reversed(children[row_id]))
    return order + [row for row in rows if row.id not in reached]


def _ring_slots(count: int) -> list[tuple[float, float]]:
    """count positions on concentric rings around the centre, inner rings first."""
    slots: list[tuple[float, float]] = []
    ring = 0
    while len(slots) < count:
        ring += 1
        radius = ring * RING_GAP
        capacity = max(6, int(2 * math.pi * radius / NODE_SPACING))
        on_ring = min(capacity, count - len(slots))
        for step in range(on_ring):
            angle = -math.pi / 2 + 2 * math.pi * step / on_ring  # from the top, clockwise
            slots.append((radius * math.cos(angle), radius * math.sin(angle)))
    return slots


def layout(rows: list[ContactRow], merges: Sequence[tuple[int, int]] = ()) -> Graph:
    """Place the rows of one customer (oldest first, as the look-ups return them);
    merges: (demoted primary, survivor) pairs from its history (lookups.HistoryPage)."""
    order = _walk_order(rows, _links(rows, merges))  # chains in creation order
    centre, *others = order
    placed = {centre.id: Node(centre, 0.0, 0.0)}
    for row, (x, y) in zip(others, _ring_slots(len(others)), strict=True):
        placed[row.id] = Node(row, x, y)
    links = _links(order, merges)  # chains in the order of placement: short edges
    edges = [
        Edge(_edge_kind(kinds), placed[first], placed[other])
        for (first, other), kinds in sorted(links.items())
    ]
    reach = max((math.hypot(node.x, node.y) for node in placed.values()), default=0.0)
    return Graph([placed[row.id] for row in rows], edges, 2 * (reach + MARGIN))

