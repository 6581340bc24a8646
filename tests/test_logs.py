"""The log's time stamp, worked out once a second (identity/process/logs.py), is the one
datetime writes, in every time zone, across a change of summer time."""

import logging
import time
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity.process.logs import json_formatter

ZONES = ["UTC", "Europe/London", "America/St_Johns", "Asia/Kolkata", "Africa/Monrovia"]
EUROPE_SUMMER_TIME_2024 = 1711846800.0  # 2024-03-31 01:00 UTC


@pytest.fixture(params=ZONES)
def zone(request, monkeypatch):
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


# The zone is the same for every example of one test: the fixture need not run again.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    created=st.floats(min_value=-2e9, max_value=4e9)
    | st.floats(min_value=EUROPE_SUMMER_TIME_2024 - 1, max_value=EUROPE_SUMMER_TIME_2024 + 1)
)
def test_the_time_stamp_is_the_one_datetime_writes(zone, created):
    formatter = json_formatter()
    for moment in (created, created + 0.0005, created):  # the cached second, and again
        record = logging.makeLogRecord({"created": moment})
        expected = datetime.fromtimestamp(moment).astimezone().isoformat(timespec="milliseconds")
        assert formatter.formatTime(record) == expected
