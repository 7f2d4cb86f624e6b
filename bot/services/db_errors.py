"""Telling a database outage from a bug, for the surfaces that must answer a person either way."""
from __future__ import annotations

from sqlalchemy.exc import DBAPIError


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database could not be reached or refused the statement (the
    transaction rolled back, so nothing changed), as opposed to a bug in jitbot."""
    return isinstance(error, DBAPIError | OSError)
