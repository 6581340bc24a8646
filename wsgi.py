"""Entry points: `python wsgi.py` serves with WORKERS waitress processes (see
identity/process/supervisor.py); WSGI servers import `app`."""

import sys

if __name__ == "__main__":
    from identity.process.supervisor import main

    sys.exit(main())

from identity import create_app  # noqa: E402

app = create_app()
