"""Fixtures of the unit tests."""

from tests.unit.apiapp import make_client

__all__ = ["make_client"]
