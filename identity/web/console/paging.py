"""Pages of a long list: a customer of thousands of rows is shown a page of rows and a
page of history at a time, so its page stays small and quick whatever its size."""

import math
from dataclasses import dataclass

ROWS_PER_PAGE = 300  # the graph draws the rows of the page: legible up to this many
EVENTS_PER_PAGE = 100


@dataclass(frozen=True)
class Page:
    items: list
    number: int  # from 1
    count: int  # pages in all (at least 1)
    total: int  # items in all
    start: int  # items before this page

    @property
    def first(self) -> int:
        """The position of the page's first item in the whole list, from 1."""
        return self.start + 1

    @property
    def last(self) -> int:
        return self.start + len(self.items)


def page_count(total: int, size: int) -> int:
    return max(1, math.ceil(total / size))


def page_of(items: list, number: int | None, size: int) -> Page:
    """Page `number` (from 1; out of range means the nearest page) of `size` items."""
    count = page_count(len(items), size)
    number = min(max(1, number or 1), count)
    start = (number - 1) * size
    return Page(items[start : start + size], number, count, len(items), start)


def page_holding(position: int, size: int) -> int:
    """The number of the page that shows the item at `position` (from 0)."""
    return position // size + 1
