"""Registers the ``parity`` suite (:mod:`suites.parity`): the suite registry imports every module of this package."""

from suites.parity import ParitySuite  # noqa: F401
