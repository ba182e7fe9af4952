"""Fixtures of the results tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from results_builders import latencies, outcomes, write_run


@pytest.fixture
def two_path_db(tmp_path: Path) -> Path:
    db = tmp_path / "results.duckdb"
    base = outcomes(300, 0.7, 1)
    write_run(db, "run1", {
        "base": {"acc_correct": base, "latency": latencies(50, 0.05, 1), "energy": 0.5, "sparsity": 0.0},
        "pruned": {"acc_correct": [c and i % 4 != 0 for i, c in enumerate(base)], "latency": latencies(50, 0.04, 2),
                   "energy": 0.4},
    })
    return db
