"""SPEC §11 whatever the order of the file: the import sorts by createdAt itself (file
order among equal times), in memory or, for a large input, in sorted runs on disk merged
while loading, and ends exactly where a one-at-a-time replay in that order ends."""

import csv
import random
import threading
from datetime import UTC, datetime, timedelta, timezone

import psycopg2
import pytest
from conftest import rows

from identity.customers import reconcile
from identity.importing import sorting
from identity.importing.orders import Order

T0 = datetime(2018, 6, 1, tzinfo=UTC)


SHARDS = 8


def shop_history(seed: int, count: int) -> list[dict]:
    """Orders of a shop, in random file order: repeat buyers (recent customers more
    often), customers with several e-mails and phones, shared family phones, bridges
    between customers, phone-only and e-mail-only orders, spelling variants. Times have
    one-minute resolution over a few weeks, so many orders share a createdAt.

    The customers fall into SHARDS groups that share no value (a bridge or a family stays
    in its group), so that the replay can run the groups side by side."""
    rng = random.Random(seed)
    customers = [0] * SHARDS
    orders = []
    for _ in range(count):
        shard = rng.randrange(SHARDS)
        known = customers[shard]
        if known == 0 or rng.random() < 0.2:
            customers[shard] += 1
            k = known
        else:
            k = known - 1 - int(known * rng.random() ** 3)
        email = f"c{k}.{rng.randrange(1 + k % 3)}@shop{shard}.example"
        phone = f"+44 7{shard}{k:05d}{rng.randrange(1 + k % 2)}"
        shape = rng.random()
        if shape < 0.01:  # a family sharing the phone of another customer
            phone = f"+44 7{shard}{rng.randrange(known + 1):05d}0"
        elif shape < 0.02:  # a bridge: another customer's e-mail
            email = f"c{rng.randrange(known + 1)}.0@shop{shard}.example"
        elif shape < 0.15:
            email = ""
        elif shape < 0.25:
            phone = ""
        elif shape < 0.3:
            email = email.upper()
        orders.append({
            "shard": shard,
            "email": email,
            "phoneNumber": phone,
            "createdAt": (T0 + timedelta(minutes=rng.randrange(30 * 24 * 60))).isoformat(),
        })
    rng.shuffle(orders)
    return orders


def write_csv(path, orders: list[dict]) -> str:
    with open(path, "w", newline="") as file:
        out = csv.DictWriter(file, ["email", "phoneNumber", "createdAt", "shard"])
        out.writeheader()
        out.writerows(orders)
    return str(path)


def normalised(order: dict) -> tuple:
    return order["email"].strip().lower() or None, order["phoneNumber"].replace(" ", "") or None


def in_time_order(orders: list[dict]) -> list[dict]:
    """createdAt order, file order among equal times (a stable sort)."""
    return sorted(orders, key=lambda order: datetime.fromisoformat(order["createdAt"]))


def replay(database_url: str, orders: list[dict]) -> None:
    """The orders one at a time through the service's own reconcile path, in createdAt
    order, file order among equal times. The groups of customers share no value, so each
    is replayed on its own connection, all at once: the same rows and links as one
    sequence, except for the ids (see ids_of_one_sequence)."""
    failures = []

    def replay_group(shard: int) -> None:
        conn = psycopg2.connect(database_url)
        conn.autocommit = True
        try:
            group = in_time_order([order for order in orders if order["shard"] == shard])
            for number, order in enumerate(group):
                if number % 1000 == 0:  # statistics for the growing table: autovacuum's
                    with conn.cursor() as cur:  # job, done sooner than its nap time would
                        cur.execute("ANALYZE contact")
                reconcile.identify(conn, *normalised(order))
        except Exception as error:  # reported by the test's thread
            failures.append(error)
        finally:
            conn.close()

    threads = [threading.Thread(target=replay_group, args=(shard,)) for shard in range(SHARDS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def ids_of_one_sequence(replayed: list[tuple], orders: list[dict]) -> dict[int, int]:
    """The id each replayed row would have had in one sequence of all the orders.

    A row is inserted by the first order carrying its e-mail and phone number (an earlier
    order with both values would have inserted it, a later one brings nothing new), and
    one sequence numbers rows in the order of the orders that insert them."""
    first = {}
    for position, order in enumerate(in_time_order(orders)):
        first.setdefault(normalised(order), position)
    by_position = sorted(replayed, key=lambda row: first[(row[1], row[2])])
    return {row[0]: number for number, row in enumerate(by_position, start=1)}


def test_sixty_thousand_orders_in_random_order_import_as_their_replay(
    runner, db, database_url, tmp_path, monkeypatch
):
    """Done-when of the exact import: a generated file of 60,000 orders in random order
    imports to exactly the rows (ids, values, links), customers and primaries of their
    one-at-a-time replay. The sort spills: runs of 4,000 orders on disk, merged again
    once 8 are written."""
    monkeypatch.setattr(sorting, "RUN_SIZE", 4000)
    monkeypatch.setattr(sorting, "MAX_RUNS", 8)
    orders = shop_history(seed=60, count=60_000)
    result = runner.invoke(args=["import", write_csv(tmp_path / "orders.csv", orders)])
    assert result.exit_code == 0, result.output
    imported = rows(db)
    assert len(imported) > 10_000 and "merges" in result.output
    assert any(link is not None for _, _, _, link, _ in imported)

    truncate(db)
    replay(database_url, orders)
    ids = ids_of_one_sequence(rows(db), orders)
    replayed = sorted(
        (ids[row_id], email, phone, ids.get(link), precedence)
        for row_id, email, phone, link, precedence in rows(db)
    )
    assert imported == replayed


def truncate(db) -> None:
    with db.cursor() as cur:
        cur.execute("TRUNCATE contact RESTART IDENTITY CASCADE")


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


@pytest.mark.parametrize("run_size, max_runs", [(1000, 64), (3, 64), (3, 2), (1, 3)])
def test_the_sorter_gives_createdat_order_with_file_order_among_equal_times(
    monkeypatch, run_size, max_runs
):
    """In memory, spilled to runs, and with runs merged again: the same order."""
    monkeypatch.setattr(sorting, "RUN_SIZE", run_size)
    monkeypatch.setattr(sorting, "MAX_RUNS", max_runs)
    rng = random.Random(run_size * 100 + max_runs)
    orders = [
        Order(line, f"e{line}@x.io" if line % 3 else None, str(line), at(rng.randrange(5)))
        for line in range(2, 40)
    ]
    orders.append(Order(40, "late@x.io", None, at(2).astimezone(timezone(timedelta(hours=5)))))
    with sorting.OrderSorter() as sorter:
        for order in orders:
            sorter.add(order)
        assert list(sorter.sorted_orders()) == sorted(orders, key=lambda order: order.created_at)
        assert sorter.count == len(orders)
