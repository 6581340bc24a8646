"""Entry points: `python wsgi.py` serves with WORKERS waitress processes (see
identity/process/supervisor.py); WSGI servers import `app`."""

import sys

if __name__ == "__main__":
    try:
        from identity.process.supervisor import main
    except KeyboardInterrupt:  # Ctrl-C while the imports run: nothing started yet
        sys.exit(0)
    sys.exit(main())

from identity import create_app  # noqa: E402

app = create_app()
