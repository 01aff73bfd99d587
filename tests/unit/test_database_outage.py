"""An attempt's writes wait out a database outage, and only an outage (issue 11).

During a MariaDB restart a worker used to give up writing an executed attempt's outcome after
0.6 s; the reaper then failed the attempt and retried it, and the job ran twice. Errors that
mean "the database is unreachable" (SQLAlchemy's, and PyMySQL's own: the recorder talks to
PyMySQL directly) are now waited out; any other error is still tried a bounded number of times.
"""

from __future__ import annotations

import logging

import pymysql
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from tickwork.middleware.attempt import write_with_retries
from tickwork.store.engine import is_unreachable

pytestmark = pytest.mark.unit

logger = logging.getLogger(__name__)
REFUSED = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'")


@pytest.mark.parametrize(
    ("exc", "unreachable"),
    [
        (REFUSED, True),
        (pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"), True),
        (pymysql.err.OperationalError(2006, "MySQL server has gone away"), True),
        (pymysql.err.InterfaceError(0, ""), True),  # a closed connection used again
        (OperationalError("UPDATE", {}, REFUSED), True),
        (pymysql.err.OperationalError(1213, "Deadlock found"), False),
        (IntegrityError("INSERT", {}, pymysql.err.IntegrityError(1062, "Duplicate entry")), False),
        (RuntimeError("bug"), False),
    ],
)
def test_which_errors_mean_the_database_is_unreachable(exc: BaseException, unreachable: bool) -> None:
    assert is_unreachable(exc) is unreachable


def test_a_write_waits_while_the_database_is_unreachable() -> None:
    calls = []

    def write() -> str:
        calls.append(1)
        if len(calls) < 8:  # far more than the 3 tries other errors get
            raise REFUSED
        return "written"

    assert write_with_retries(write, what="a test write", logger=logger) == "written"
    assert len(calls) == 8


def test_the_wait_is_bounded() -> None:
    def write() -> None:
        raise REFUSED

    with pytest.raises(pymysql.err.OperationalError):
        write_with_retries(write, what="a test write", logger=logger, unreachable_seconds=0.3)


def test_other_errors_are_tried_three_times() -> None:
    calls = []

    def write() -> None:
        calls.append(1)
        raise RuntimeError("not an outage")

    with pytest.raises(RuntimeError):
        write_with_retries(write, what="a test write", logger=logger)
    assert len(calls) == 3
