"""Production entry point: `python wsgi.py` serves the app with waitress."""

import logging

import waitress

from identity import create_app

app = create_app()

if __name__ == "__main__":
    logging.basicConfig(level=app.config["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    waitress.serve(
        app,
        host=app.config["HOST"],
        port=app.config["PORT"],
        threads=app.config["THREADS"],
        ident="identity",
    )
