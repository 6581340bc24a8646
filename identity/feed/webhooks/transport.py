"""One POST of one batch, and whether the receiver took it.

The standard library's urllib is enough here: one request at a time, at most a few a
second, with a timeout, certificate checks by default, and the usual proxy variables
(HTTPS_PROXY, NO_PROXY) honoured. Nothing that a client library adds (connection
pools, retries, sessions) would be used: retrying is the deliverer's own business,
because only it knows it must never skip.
"""

import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass

USER_AGENT = "identity-webhooks/1.0"


@dataclass(frozen=True)
class Answer:
    accepted: bool  # a 2xx: the receiver has the batch
    detail: str  # for the log: the status, or why there was none (never the body)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would follow a 301/302/303 as a GET without the body, and that GET's 200
    would count as a delivery. A redirect is an answer like any other non-2xx."""

    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_RefuseRedirects)


def post(url: str, body: bytes, headers: dict, timeout_s: float) -> Answer:
    """POST body; timeout_s bounds the connection and each wait for the receiver's answer."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
    )
    try:
        with _opener.open(request, timeout=timeout_s) as response:
            return Answer(200 <= response.status < 300, f"HTTP {response.status}")
    except urllib.error.HTTPError as error:
        error.close()
        return Answer(False, f"HTTP {error.code}")
    except urllib.error.URLError as error:
        return Answer(False, type(error.reason).__name__)
    except (OSError, http.client.HTTPException) as error:
        return Answer(False, type(error).__name__)
