"""The support console at /console: server-rendered pages for the support role.

Find a customer by e-mail, phone number or contact id; see every row, a picture of how
the rows are linked, and the history; detach a value or erase the customer, each after a
confirmation. Pages are Jinja2 templates with one style sheet and no script, all shipped
in this package, so the console works on a network without internet.
"""

from flask import Flask

from identity.web import access

from . import auth

# Scripts, styles, images and form targets from this service only; no inline script or
# style (the SVG graph is styled by the style sheet's classes), no framing.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "object-src 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)


def _secure_html(response):
    """Every HTML answer of the app gets the policy, whichever part of the app made it."""
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        # Pages carry personal data: no copy in a browser's or proxy's cache.
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    from .views import bp

    auth.configure_session(app)
    app.after_request(_secure_html)
    app.register_blueprint(bp)
    access.declare(app, "console.static", access.OPEN)  # the style sheet and the icon
