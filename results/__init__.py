"""Results: the versioned DuckDB warehouse, its views and queries, comparisons and the regression check.

This package never imports torch: it receives plain dicts from the harness.
"""
