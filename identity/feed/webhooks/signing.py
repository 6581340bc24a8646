"""The X-Identity-Signature header: proof for the receiver that a batch comes from us.

    X-Identity-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>

The time is signed with the body, so a receiver can refuse a recorded request replayed
later; it changes at every attempt, so a retried batch carries a fresh signature.
"""

import hashlib
import hmac

HEADER = "X-Identity-Signature"


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
