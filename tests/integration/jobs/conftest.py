"""The job system's parts of the unit tests (a SQLite file, the echo engine), here next to a
real service."""

from tests.unit.jobs.conftest import parts

__all__ = ["parts"]
