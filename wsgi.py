"""Production entry point: `python wsgi.py` serves the app with waitress."""

import logging

import waitress

from identity import create_app

app = create_app()

if __name__ == "__main__":
    logging.basicConfig(level=app.config["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Waitress warns at every request while all threads are busy; under load that is
    # thousands of lines a second about one fact, which /metrics' latencies show anyway.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    waitress.serve(
        app,
        host=app.config["HOST"],
        port=app.config["PORT"],
        threads=app.config["THREADS"],
        ident="identity",
    )
