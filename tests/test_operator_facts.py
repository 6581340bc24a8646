"""What an operator and an integrator rely on: log times carry their time zone, and every
OpenAPI operation has its own operationId (generated clients get real method names), and
`make smoke` erases the customers it made."""

import json
import logging
import re
import subprocess
from datetime import datetime

from servers import ServerProcess

from identity.config import PROJECT_ROOT
from identity.process.logs import json_formatter


def test_every_operation_has_its_own_operation_id(client):
    document = client.get("/openapi.json").get_json()
    ids = [operation.get("operationId") for operations in document["paths"].values()
           for operation in operations.values()]
    assert all(isinstance(name, str) and re.fullmatch(r"[a-z][A-Za-z]*", name) for name in ids)
    assert len(ids) == len(set(ids)) >= 10
    assert document["paths"]["/identify"]["get"]["operationId"] == "lookUp"


def test_a_log_line_has_its_time_with_the_time_zone():
    record = logging.LogRecord("identity.test", logging.INFO, __file__, 1, "hello", None, None)
    line = json.loads(json_formatter().format(record))
    moment = datetime.fromisoformat(line["asctime"])
    assert moment.utcoffset() is not None
    assert abs(moment.timestamp() - record.created) < 0.001


def test_make_smoke_leaves_no_customer_behind(db, database_url):
    with ServerProcess(database_url, WORKERS=1, THREADS=2) as server:
        result = subprocess.run(
            ["sh", str(PROJECT_ROOT / "tests" / "smoke.sh"), server.url],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all smoke checks passed" in result.stdout
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM contact WHERE email IS NOT NULL OR phoneNumber IS NOT NULL"
        )
        assert cur.fetchone() == (0,)
