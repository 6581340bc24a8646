"""The X-Identity-Signature header: proof for the receiver that a batch comes from us,
for it.

    X-Identity-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<subscriber>.<body>"
                          under the secret>
    X-Identity-Subscriber: <subscriber>

The time is signed with the body, so a receiver can refuse a recorded request replayed
later; it changes at every attempt, so a retried batch carries a fresh signature. The
subscriber (WEBHOOK_SUBSCRIBER) is signed too, so that a batch sent to one subscriber does
not verify at another that shares the secret: each receiver checks the signature with its
own name, never with the name the header claims. A subscriber's name has no `{` and a body
always starts with one, so no other (subscriber, body) pair signs the same bytes.
"""

import hashlib
import hmac

HEADER = "X-Identity-Signature"
SUBSCRIBER_HEADER = "X-Identity-Subscriber"


def signed_bytes(subscriber: str, body: bytes, timestamp: int) -> bytes:
    return f"{timestamp}.{subscriber}.".encode() + body


def signature(secret: bytes, subscriber: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, signed_bytes(subscriber, body, timestamp), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def headers(secret: bytes, subscriber: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers that sign one attempt to deliver `body` to `subscriber`."""
    return {
        HEADER: signature(secret, subscriber, body, timestamp),
        SUBSCRIBER_HEADER: subscriber,
    }
