"""The picture of a customer: a node per row, an edge between rows that share a value.

Coordinates are computed here and drawn as inline SVG by the template, so the page needs
no script. The primary sits in the centre; the other rows fill concentric rings, nearest
first in the order of a breadth-first walk from the primary (rows that share a value with
the primary, then rows one more step away, ...), each group ordered by where the row it was
reached from sits, which keeps most edges short. Ring spacing keeps nodes apart whatever the
size of the customer: a few hundred rows make about ten rings.

A value carried by many rows would draw an edge between every two of them (a phone number
on 300 rows: 44,850 edges). Each value is drawn instead as a star from the oldest row that
carries it to every other: as connected, at most two edges per row.
"""

import math
from collections import deque
from dataclasses import dataclass

from ..repository import ContactRow

NODE_RADIUS = 15
NODE_SPACING = 40  # between neighbours on a ring, centre to centre
RING_GAP = 48  # between rings
MARGIN = NODE_RADIUS + 8


@dataclass(frozen=True)
class Node:
    row: ContactRow
    x: float
    y: float

    @property
    def label(self) -> str:
        return str(self.row.id)


@dataclass(frozen=True)
class Edge:
    kind: str  # "email", "phone" or "both": what the two rows share
    source: Node
    target: Node


@dataclass(frozen=True)
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    size: float  # width and height of the square picture

    @property
    def view_box(self) -> str:
        return f"{-self.size / 2:.0f} {-self.size / 2:.0f} {self.size:.0f} {self.size:.0f}"


def shared_value_pairs(rows: list[ContactRow]) -> dict[tuple[int, int], set[str]]:
    """(first carrier, other carrier) → the kinds of value they share, one star per value."""
    first_carrier: dict[tuple[str, str], int] = {}
    pairs: dict[tuple[int, int], set[str]] = {}
    for row in rows:  # oldest first
        for kind, value in (("email", row.email), ("phone", row.phone_number)):
            if value is None:
                continue
            first = first_carrier.setdefault((kind, value), row.id)
            if first != row.id:
                pairs.setdefault((first, row.id), set()).add(kind)
    return pairs


def _walk_order(rows: list[ContactRow], pairs) -> list[tuple[ContactRow, int | None]]:
    """Rows in breadth-first order from the primary, each with the row it was reached from.

    Rows the walk cannot reach (possible only in data that breaks the invariants) come
    last, so every row is drawn."""
    by_id = {row.id: row for row in rows}
    neighbours: dict[int, list[int]] = {row.id: [] for row in rows}
    for first, other in pairs:
        neighbours[first].append(other)
        neighbours[other].append(first)
    start = next((row for row in rows if row.is_primary), rows[0])
    order, parent_of = [], {start.id: None}
    queue = deque([start.id])
    while queue:
        row_id = queue.popleft()
        order.append((by_id[row_id], parent_of[row_id]))
        for neighbour in sorted(neighbours[row_id]):
            if neighbour not in parent_of:
                parent_of[neighbour] = row_id
                queue.append(neighbour)
    order += [(row, None) for row in rows if row.id not in parent_of]
    return order


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


def layout(rows: list[ContactRow]) -> Graph:
    """Place the rows of one customer (oldest first, as the look-ups return them)."""
    pairs = shared_value_pairs(rows)
    walk = _walk_order(rows, pairs)
    slots = _ring_slots(len(rows) - 1)
    placed: dict[int, Node] = {}
    slot_of: dict[int, int] = {}
    centre, _ = walk[0]
    placed[centre.id] = Node(centre, 0.0, 0.0)
    slot_of[centre.id] = -1
    # Rows are taken in walk order, but within one step of the walk the rows reached from
    # an earlier-placed row come first: neighbours end up near the row they hang from.
    remaining = walk[1:]
    next_slot = 0
    while remaining:
        depth_group = _next_group(remaining, placed)
        depth_group.sort(key=lambda item: (slot_of.get(item[1], len(rows)), item[0].id))
        for row, _parent in depth_group:
            x, y = slots[next_slot]
            placed[row.id] = Node(row, x, y)
            slot_of[row.id] = next_slot
            next_slot += 1
        remaining = remaining[len(depth_group) :]
    edges = [
        Edge("both" if len(kinds) == 2 else next(iter(kinds)), placed[first], placed[other])
        for (first, other), kinds in sorted(pairs.items())
    ]
    reach = max((math.hypot(node.x, node.y) for node in placed.values()), default=0.0)
    return Graph([placed[row.id] for row in rows], edges, 2 * (reach + MARGIN))


def _next_group(remaining, placed) -> list:
    """The leading rows of the walk whose parents are all placed already (one depth)."""
    group = []
    for row, parent in remaining:
        if parent is not None and parent not in placed:
            break
        group.append((row, parent))
    return group
