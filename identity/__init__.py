"""Identity reconciliation service: links the checkouts of one person into one customer."""

from flask import Flask

from . import config, db, errors, observability
from .audit import audit_command
from .blocklist import Blocklist
from .importing.command import import_command
from .metrics import Metrics
from .schemas import IdentifyRequest


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment's settings, then apply test_config on top."""
    app = Flask(__name__)
    app.config.from_mapping(config.from_environment())
    if test_config:
        app.config.from_mapping(test_config)
    app.json.sort_keys = False  # answers keep SPEC §3's member order
    app.extensions["identity_metrics"] = Metrics(app.config["POOL_SIZE"])
    app.extensions["identity_request_schema"] = IdentifyRequest(
        Blocklist.load(app.config["BLOCKLIST"])
    )

    db.init_app(app)
    errors.init_app(app)
    observability.init_app(app)
    app.cli.add_command(audit_command)
    app.cli.add_command(import_command)

    from .api import bp

    app.register_blueprint(bp)
    return app
