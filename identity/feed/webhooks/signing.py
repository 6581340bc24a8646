"""The X-Identity-Signature header: proof for the receiver that a batch comes from us,
for it.

    X-Identity-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>

The time is signed with the body, so a receiver can refuse a recorded request replayed
later; it changes at every attempt, so a retried batch carries a fresh signature. The body
names its subscriber (WEBHOOK_SUBSCRIBER), so the name is signed too: a batch sent to one
subscriber does not pass at another that shares the secret, when each receiver checks
that the signed body names it.
"""

import hashlib
import hmac

HEADER = "X-Identity-Signature"


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"
