"""Identity reconciliation service: links the checkouts of one person into one customer."""

from flask import Flask

from identity.customers.blocklist import Blocklist, StoredBlocklist
from identity.web.metrics import Metrics
from identity.web.schemas import DetachRequest, IdentifyRequest

from . import commands, config
from .customers import hubs, repository
from .database import connections as db
from .web import access, console, errors, observability, openapi


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment's settings, then apply test_config on top."""
    # No static_folder: the service serves no files of its own, and every route must
    # declare its role (identity/web/access.py).
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(config.from_environment())
    if test_config:
        app.config.from_mapping(test_config)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # answers keep SPEC §3's member order
    app.extensions["identity_metrics"] = Metrics(app.config["POOL_SIZE"])
    app.extensions["identity_hub_rule"] = hubs.Rule(
        app.config["HUB_MAX_PARTNERS"], app.config["HUB_ACTION"]
    )
    blocklist = StoredBlocklist(
        Blocklist.load(app.config["BLOCKLIST"]),
        load=lambda: db.run_unit(repository.blocked_values),
        refresh_s=app.config["BLOCKLIST_REFRESH_S"],
    )
    app.extensions["identity_blocklist"] = blocklist
    phone_region = app.config["PHONE_REGION"] = config.phone_region(app.config["PHONE_REGION"])
    app.extensions["identity_request_schema"] = IdentifyRequest(blocklist, phone_region)
    app.extensions["identity_detach_schema"] = DetachRequest(phone_region)

    db.init_app(app)
    errors.init_app(app)
    observability.init_app(app)
    access.init_app(app)
    for command in commands.ALL:
        app.cli.add_command(command)

    from identity.web.api import ContactIdConverter, bp

    app.url_map.converters["contact_id"] = ContactIdConverter
    app.register_blueprint(bp)
    console.init_app(app)
    app.extensions["identity_openapi"] = openapi.document(app)
    return app
