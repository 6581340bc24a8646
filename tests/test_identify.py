"""SPEC §3 and §5: the answers and the rows of POST /identify, worked examples included."""

import pytest
from conftest import identify, rows


def answer(primary, emails, phones, secondaries):
    return {
        "primaryContactId": primary,
        "emails": emails,
        "phoneNumbers": phones,
        "secondaryContactIds": secondaries,
    }


LORRAINE = "lorraine@hillvalley.edu"
MCFLY = "mcfly@hillvalley.edu"


def test_rule_1_unknown_values_create_a_primary(client, db):
    assert identify(client, {"email": LORRAINE, "phoneNumber": "123456"}) == answer(
        1, [LORRAINE], ["123456"], []
    )
    assert rows(db) == [(1, LORRAINE, "123456", None, "primary")]


@pytest.mark.parametrize(
    "body, stored",
    [
        ({"email": LORRAINE}, (1, LORRAINE, None, None, "primary")),
        ({"phoneNumber": "123456"}, (1, None, "123456", None, "primary")),
        ({"email": LORRAINE, "phoneNumber": None}, (1, LORRAINE, None, None, "primary")),
    ],
)
def test_rule_1_with_one_value_stores_null_for_the_other(client, db, body, stored):
    identify(client, body)
    assert rows(db) == [stored]


def test_worked_example_a(client, db):
    identify(client, {"email": LORRAINE, "phoneNumber": "123456"})
    expected = answer(1, [LORRAINE, MCFLY], ["123456"], [2])
    assert identify(client, {"email": MCFLY, "phoneNumber": "123456"}) == expected
    assert rows(db) == [
        (1, LORRAINE, "123456", None, "primary"),
        (2, MCFLY, "123456", 1, "secondary"),
    ]
    for body in (
        {"email": None, "phoneNumber": "123456"},
        {"email": LORRAINE, "phoneNumber": None},
        {"email": MCFLY},
    ):
        assert identify(client, body) == expected
    assert len(rows(db)) == 2


def insert(db, id_, email, phone, created_at, linked_id=None, deleted=False):
    with db.cursor() as cur:
        cur.execute(
            """INSERT INTO contact (id, email, phoneNumber, linkedId, linkPrecedence,
                                    createdAt, updatedAt, deletedAt)
               OVERRIDING SYSTEM VALUE
               VALUES (%s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)""",
            (
                id_,
                email,
                phone,
                linked_id,
                "secondary" if linked_id else "primary",
                created_at,
                created_at,
                deleted,
            ),
        )
        # Explicit ids do not advance the identity sequence: move it past them.
        cur.execute("SELECT setval(pg_get_serial_sequence('contact', 'id'), max(id)) FROM contact")


def test_worked_example_b_merges_into_the_older_primary(client, db):
    insert(db, 11, "george@hillvalley.edu", "919191", "2023-04-11")
    insert(db, 27, "biffsucks@hillvalley.edu", "717171", "2023-04-21")
    assert identify(client, {"email": "george@hillvalley.edu", "phoneNumber": "717171"}) == answer(
        11, ["george@hillvalley.edu", "biffsucks@hillvalley.edu"], ["919191", "717171"], [27]
    )
    assert rows(db) == [
        (11, "george@hillvalley.edu", "919191", None, "primary"),
        (27, "biffsucks@hillvalley.edu", "717171", 11, "secondary"),
    ]


def test_merge_keeps_the_oldest_primary_even_with_a_higher_id(client, db):
    insert(db, 5, "new@x.io", "1", "2024-01-02")
    insert(db, 9, "old@x.io", "2", "2024-01-01")
    assert identify(client, {"email": "new@x.io", "phoneNumber": "2"})["primaryContactId"] == 9
    assert rows(db) == [(5, "new@x.io", "1", 9, "secondary"), (9, "old@x.io", "2", None, "primary")]


def test_merge_repoints_the_losers_secondaries_and_stamps_updated_at(client, db):
    insert(db, 1, "a@x.io", "100", "2024-01-01")
    insert(db, 2, "b@x.io", "200", "2024-01-02")
    insert(db, 3, "c@x.io", "200", "2024-01-03", linked_id=2)
    insert(db, 4, "d@x.io", "300", "2024-01-04", linked_id=2)
    assert identify(client, {"email": "a@x.io", "phoneNumber": "300"}) == answer(
        1, ["a@x.io", "b@x.io", "c@x.io", "d@x.io"], ["100", "200", "300"], [2, 3, 4]
    )
    assert [row[3] for row in rows(db)] == [None, 1, 1, 1]
    with db.cursor() as cur:
        cur.execute("SELECT id FROM contact WHERE updatedAt > createdAt ORDER BY id")
        assert cur.fetchall() == [(2,), (3,), (4,)]


def test_merge_of_three_customers_and_a_new_value_in_one_request(client, db):
    insert(db, 1, "a@x.io", "100", "2024-01-01")
    insert(db, 2, "b@x.io", "200", "2024-01-02")
    identify(client, {"email": "a@x.io", "phoneNumber": "200"})  # merges 2 into 1
    insert(db, 4, "c@x.io", "400", "2024-01-03")
    result = identify(client, {"email": "c@x.io", "phoneNumber": "100"})
    assert result == answer(1, ["a@x.io", "b@x.io", "c@x.io"], ["100", "200", "400"], [2, 4])
    assert len(rows(db)) == 3  # both values were known: nothing inserted


def test_new_value_for_a_known_customer_adds_one_secondary(client, db):
    identify(client, {"email": "a@x.io", "phoneNumber": "100"})
    result = identify(client, {"email": "a@x.io", "phoneNumber": "200"})
    assert result == answer(1, ["a@x.io"], ["100", "200"], [2])
    assert rows(db)[1] == (2, "a@x.io", "200", 1, "secondary")


def test_answer_lists_the_primarys_values_first_then_by_creation(client, db):
    insert(db, 1, "first@x.io", None, "2024-01-01")
    insert(db, 2, None, "555", "2024-01-02", linked_id=1)
    insert(db, 3, "third@x.io", "555", "2024-01-03", linked_id=1)
    insert(db, 4, "first@x.io", "777", "2024-01-04", linked_id=1)
    assert identify(client, {"phoneNumber": "777"}) == answer(
        1, ["first@x.io", "third@x.io"], ["555", "777"], [2, 3, 4]
    )


def test_secondaries_of_equal_creation_time_are_ordered_by_id(client, db):
    insert(db, 1, "p@x.io", None, "2024-01-01")
    insert(db, 3, "c@x.io", None, "2024-01-02", linked_id=1)
    insert(db, 2, "b@x.io", None, "2024-01-02", linked_id=1)
    assert identify(client, {"email": "p@x.io"})["secondaryContactIds"] == [2, 3]
    assert identify(client, {"email": "p@x.io"})["emails"] == ["p@x.io", "b@x.io", "c@x.io"]


def test_deleted_rows_never_match_and_are_never_shown(client, db):
    insert(db, 1, "gone@x.io", "100", "2024-01-01", deleted=True)
    insert(db, 2, "live@x.io", "200", "2024-01-02")
    insert(db, 3, "hidden@x.io", "200", "2024-01-03", linked_id=2, deleted=True)
    assert identify(client, {"email": "live@x.io"}) == answer(2, ["live@x.io"], ["200"], [])
    result = identify(client, {"email": "gone@x.io", "phoneNumber": "100"})
    assert result == answer(4, ["gone@x.io"], ["100"], [])


@pytest.mark.parametrize(
    "stored, request_body",
    [
        ({"email": "lorraine@hillvalley.edu"}, {"email": "  Lorraine@HillValley.EDU "}),
        ({"phoneNumber": "123456"}, {"phoneNumber": "123-456"}),
        ({"phoneNumber": "123456"}, {"phoneNumber": " (123) 45.6 "}),
        ({"phoneNumber": "123456"}, {"phoneNumber": 123456}),
        ({"phoneNumber": "+44123"}, {"phoneNumber": "+44 123"}),
        # Unicode separators: no-break and narrow no-break space, hyphen, non-breaking
        # hyphen, figure dash, en dash, minus sign.
        ({"phoneNumber": "123456"}, {"phoneNumber": "123\u00a0456"}),
        ({"phoneNumber": "123456"}, {"phoneNumber": "123\u202f456"}),
        ({"phoneNumber": "123456"}, {"phoneNumber": "123\u2010456"}),
        ({"phoneNumber": "123456"}, {"phoneNumber": "123\u2011456"}),
        ({"phoneNumber": "123456"}, {"phoneNumber": "123\u2012456"}),
        ({"phoneNumber": "123456"}, {"phoneNumber": "123\u2013456"}),
        ({"phoneNumber": "123456"}, {"phoneNumber": "1\u221223 \u2013 456"}),
        # One domain, one form: IDNA a-labels and u-labels, any case, are the same domain.
        ({"email": "a@bücher.de"}, {"email": "a@xn--bcher-kva.de"}),
        ({"email": "a@xn--bcher-kva.de"}, {"email": "A@BÜCHER.DE"}),
        ({"email": "a@bücher.de"}, {"email": "a@bu\u0308cher.de"}),  # decomposed ü
    ],
)
def test_matching_uses_normalised_values(client, db, stored, request_body):
    identify(client, stored)
    assert identify(client, request_body)["primaryContactId"] == 1
    assert len(rows(db)) == 1


def test_an_internationalised_domain_is_stored_in_its_unicode_form(client, db):
    assert identify(client, {"email": "Doc@XN--BCHER-KVA.de"})["emails"] == ["doc@bücher.de"]
    assert rows(db)[0][1] == "doc@bücher.de"


def test_blank_value_counts_as_absent(client, db):
    identify(client, {"email": "a@x.io", "phoneNumber": "  "})
    identify(client, {"email": "", "phoneNumber": "100"})
    assert rows(db) == [(1, "a@x.io", None, None, "primary"), (2, None, "100", None, "primary")]


def test_extra_members_are_ignored(client, db):
    body = {"email": "a@x.io", "orderId": 42, "items": [1, 2], "phoneNumber": None}
    assert identify(client, body) == answer(1, ["a@x.io"], [], [])


def test_repeating_any_request_inserts_nothing_and_answers_the_same(client, db):
    bodies = [
        {"email": "a@x.io", "phoneNumber": "1"},
        {"email": "b@x.io", "phoneNumber": "1"},
        {"email": "c@x.io", "phoneNumber": "2"},
        {"email": "b@x.io", "phoneNumber": "2"},
    ]
    first = [identify(client, body) for body in bodies]
    before = rows(db)
    assert [identify(client, body) for body in bodies][-1] == first[-1]
    assert rows(db) == before
