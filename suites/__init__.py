"""Suites: quality (via lm-eval), trust, latency, memory, energy. Each suite is
``run(handle, ctx) -> SuiteResult``; suites never write to the database."""
