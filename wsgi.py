"""Production entry point: `python wsgi.py` serves the app with waitress."""

from identity import create_app
from identity.server import serve

app = create_app()

if __name__ == "__main__":
    serve(app)
