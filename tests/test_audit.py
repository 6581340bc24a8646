"""The audit command finds every kind of SPEC §6 violation, and nothing on sound data."""

import pytest


def insert_rows(db, values_sql):
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO contact"
            " (id, email, phoneNumber, linkedId, linkPrecedence, createdAt, deletedAt) "
            "OVERRIDING SYSTEM VALUE VALUES " + values_sql
        )


def test_sound_data_passes(runner, client, db):
    for body in (
        {"email": "a@x.io", "phoneNumber": "1"},
        {"email": "b@x.io", "phoneNumber": "2"},
        {"email": "a@x.io", "phoneNumber": "2"},
        {"email": "c@x.io", "phoneNumber": "1"},
    ):  # the third merges two customers whose rows share no value (SPEC example B)
        assert client.post("/identify", json=body).status_code == 200
    result = runner.invoke(args=["audit"])
    assert result.exit_code == 0, result.output
    assert "no violations" in result.output


@pytest.mark.parametrize(
    "rows_sql, invariant, row_ids",
    [
        (  # a chain: 3 -> 2 -> 1
            "(1, 'a@x.io', '1', NULL, 'primary', '2024-01-01', NULL),"
            "(2, 'a@x.io', '2', 1, 'secondary', '2024-01-02', NULL),"
            "(3, 'b@x.io', '2', 2, 'secondary', '2024-01-03', NULL)",
            "§6.1",
            "rows 3",
        ),
        (  # orphans (SPEC §2) sharing a value with another customer
            "(1, 'a@x.io', '1', NULL, 'primary', '2024-01-01', now()),"
            "(2, 'b@x.io', '2', 1, 'secondary', '2024-01-02', NULL),"
            "(3, 'c@x.io', '2', 1, 'secondary', '2024-01-03', NULL),"
            "(4, 'c@x.io', '4', NULL, 'primary', '2024-01-04', NULL)",
            "§6.2",
            "rows 2, 4",
        ),
        (  # a secondary older than its primary
            "(1, 'a@x.io', '1', NULL, 'primary', '2024-01-02', NULL),"
            "(2, 'a@x.io', '2', 1, 'secondary', '2024-01-01', NULL)",
            "§6.3",
            "rows 2, 1",
        ),
        (  # two customers share an e-mail
            "(1, 'a@x.io', '1', NULL, 'primary', '2024-01-01', NULL),"
            "(2, 'a@x.io', '2', NULL, 'primary', '2024-01-02', NULL)",
            "§6.2",
            "rows 1, 2",
        ),
    ],
)
def test_each_violation_is_reported_with_its_rows(runner, db, rows_sql, invariant, row_ids):
    insert_rows(db, rows_sql)
    result = runner.invoke(args=["audit"])
    assert result.exit_code == 1
    assert invariant in result.output and row_ids in result.output, result.output


def test_orphans_are_a_note_not_a_violation(runner, db):
    """SPEC §2 allows a primary to be soft-deleted directly: its live rows are orphans."""
    insert_rows(
        db,
        "(1, 'a@x.io', '1', NULL, 'primary', '2024-01-01', now()),"
        "(2, 'b@x.io', '2', 1, 'secondary', '2024-01-02', NULL),"
        "(3, 'c@x.io', '3', 1, 'secondary', '2024-01-03', NULL)",
    )
    result = runner.invoke(args=["audit"])
    assert result.exit_code == 0, result.output
    assert "rows 2, 3 are orphans of the soft-deleted primary 1" in result.output
    assert "no violations" in result.output
