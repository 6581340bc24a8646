"""The console's sessions in the database (sql/009_console_session.sql): every SQL
statement they need, named and commented. Ages are measured by the database's clock, the
one clock every server process shares."""

from datetime import timedelta

# A new session, keyed by the digest of its cookie's key.
OPEN_SESSION = """
INSERT INTO console_session (id, tokenDigest) VALUES (%(id)s, %(token_digest)s)
"""

# The token digest of a session that has not ended and is younger than the lifetime.
LIVE_SESSION = """
SELECT tokenDigest FROM console_session
 WHERE id = %(id)s AND signedInAt > clock_timestamp() - %(lifetime)s
"""

# Sign-out: the session ends for every copy of its cookie.
END_SESSION = "DELETE FROM console_session WHERE id = %(id)s"

# Sessions past the lifetime are refused already; this only keeps the table small.
FORGET_EXPIRED = "DELETE FROM console_session WHERE signedInAt <= clock_timestamp() - %(lifetime)s"


def open_session(conn, session_id: str, token_digest: str, lifetime: timedelta) -> None:
    with conn.cursor() as cur:
        cur.execute(FORGET_EXPIRED, {"lifetime": lifetime})
        cur.execute(OPEN_SESSION, {"id": session_id, "token_digest": token_digest})


def live_token_digest(conn, session_id: str, lifetime: timedelta) -> str | None:
    with conn.cursor() as cur:
        cur.execute(LIVE_SESSION, {"id": session_id, "lifetime": lifetime})
        row = cur.fetchone()
        return row[0] if row else None


def end_session(conn, session_id: str) -> None:
    with conn.cursor() as cur:
        cur.execute(END_SESSION, {"id": session_id})
