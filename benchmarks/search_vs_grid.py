"""Issue 21's search acceptance: the search's trials against the whole grid, read from one workspace's DuckDB.

Usage (one workspace: the search reuses the grid's cached nodes and stored suite runs, so both read the same
measurements)::

    python benchmarks/search_vs_grid.py --spec benchmarks/search.yaml --write-grid .slm-search/grid.yaml
    SLM_DATA_DIR=../shared/benchmarks slm run .slm-search/grid.yaml --workspace .slm-search
    SLM_DATA_DIR=../shared/benchmarks slm run benchmarks/search.yaml --workspace .slm-search
    python benchmarks/search_vs_grid.py --spec benchmarks/search.yaml --db .slm-search/results.duckdb

``--write-grid`` writes the spec without ``search:`` (named ``<name>-grid``): every grid path. The report reads the
latest run of each and prints one row per grid path: the objective and every constrained metric (value ± stderr, n,
as the search reads them: :func:`harness.search.read_value`), whether the path holds the constraints, whether it is
on the grid's Pareto frontier (point estimates; the objective and every constrained metric in its direction: a ``>=``
bound's metric higher is better, a ``<=`` bound's lower), and whether the search ran it. Then: the trials (distinct
paths the search ran) against the grid's paths, the search's best feasible path, the grid's best feasible path and
their difference (stderr of the difference of two independent estimates), and whether the found path is on the
frontier. No torch: DuckDB and the spec only.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.search import Value, read_value  # noqa: E402
from harness.spec import SearchSpec, load_spec  # noqa: E402
from results.queries import rows  # noqa: E402
from results.store import connect  # noqa: E402


def write_grid(spec_file: Path, out: Path) -> None:
    """The spec without ``search:``, named ``<name>-grid``: the whole grid as one ordinary run."""
    raw = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    raw.pop("search", None)
    raw["name"] = f"{raw.get('name', spec_file.stem)}-grid"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    print(f"wrote {out}: {raw['name']}, the grid of {spec_file} without search:")


def latest_run_paths(con: Any, spec_name: str) -> tuple[str, list[dict[str, Any]]]:
    found = rows(con, "SELECT run_id FROM runs WHERE spec_name = ? ORDER BY started_at DESC LIMIT 1", [spec_name])
    if not found:
        sys.exit(f"no run of {spec_name!r} in the database: run it first (see --help)")
    run_id = found[0]["run_id"]
    paths = rows(con, "SELECT p.path_id, p.name FROM paths p JOIN run_paths r USING (path_id) WHERE r.run_id = ? "
                      "ORDER BY p.name", [run_id])
    return run_id, paths


def measures(con: Any, search: SearchSpec, path: dict[str, Any]) -> list[Value | None]:
    """The objective, then each constrained metric, of one path (None where not measured)."""
    metrics = rows(con, "SELECT suite, task, metric, value, stderr, n, unit, method FROM metrics_long "
                        "WHERE path_id = ? AND value IS NOT NULL", [path["path_id"]])
    names = [("objective", search.objective.metric)] + [(f"constraints[{i}]", c.metric)
                                                       for i, c in enumerate(search.constraints)]
    return [read_value(name, fld, metrics, path["name"]) for fld, name in names]


def feasible(search: SearchSpec, values: list[Value | None]) -> bool:
    return all(v is not None and c.violation(v.value) <= 0 for c, v in zip(search.constraints, values[1:],
                                                                           strict=True))


def pareto(search: SearchSpec, table: dict[str, list[Value | None]]) -> set[str]:
    """Paths no other path dominates (at least as good on every axis, better on one), on point estimates."""
    signs = [1 if search.objective.direction == "maximize" else -1] + [1 if c.op == ">=" else -1
                                                                       for c in search.constraints]
    points = {p: [s * v.value for s, v in zip(signs, vals, strict=True)] for p, vals in table.items()
              if all(v is not None for v in vals)}  # type: ignore[union-attr]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))

    return {p for p, a in points.items() if not any(dominates(b, a) for q, b in points.items() if q != p)}


def best(search: SearchSpec, table: dict[str, list[Value | None]], among: set[str]) -> str | None:
    sign = 1 if search.objective.direction == "maximize" else -1
    ok = [p for p in among if p in table and table[p][0] is not None and feasible(search, table[p])]
    return max(ok, key=lambda p: sign * table[p][0].value) if ok else None  # type: ignore[union-attr]


def _cell(v: Value | None) -> str:
    if v is None:
        return "—"
    return f"{v.value:.4g}" + (f" ± {v.stderr:.2g}" if v.stderr is not None else "") + f" (n={v.n})"


def report(spec_file: Path, db: Path, grid_name: str | None = None) -> None:
    spec = load_spec(spec_file)
    search = spec.search
    if search is None:
        sys.exit(f"{spec_file}: no search: field")
    with connect(db, read_only=True) as con:
        grid_run, grid = latest_run_paths(con, grid_name or f"{spec.name}-grid")
        search_run, searched = latest_run_paths(con, spec.name)
        names = {p["name"] for p in grid} | {p["name"] for p in searched}
        by_name = {p["name"]: p for p in grid + searched}
        table = {n: measures(con, search, by_name[n]) for n in sorted(names)}
    ran = {p["name"] for p in searched}
    front = pareto(search, {n: table[n] for n in (p["name"] for p in grid)})
    heads = [f"{search.objective.direction} {search.objective.metric}"] + [c.label() for c in search.constraints]
    print(f"grid run {grid_run}, search run {search_run} ({db})")
    print("| path | " + " | ".join(heads) + " | feasible | Pareto | searched |")
    print("|---" * (len(heads) + 4) + "|")
    for name in sorted(names, key=lambda n: (n not in ran, n)):
        vals = table[name]
        marks = ["yes" if feasible(search, vals) else "no", "yes" if name in front else "",
                 "yes" if name in ran else ""]
        print(f"| {name} | " + " | ".join(_cell(v) for v in vals) + " | " + " | ".join(marks) + " |")
    found, optimum = best(search, table, ran), best(search, table, {p["name"] for p in grid})
    print(f"\ntrials: the search ran {len(ran)} distinct paths; the grid has {len(grid)} paths "
          f"({'fewer' if len(ran) < len(grid) else 'NOT fewer'})")
    print(f"search's best feasible path: {found or 'none'}" + (f": {_cell(table[found][0])}" if found else ""))
    print(f"grid's best feasible path:   {optimum or 'none'}" + (f": {_cell(table[optimum][0])}" if optimum else ""))
    if found and optimum and found != optimum:
        a, b = table[optimum][0], table[found][0]
        assert a is not None and b is not None
        se = math.sqrt((a.stderr or 0) ** 2 + (b.stderr or 0) ** 2) if a.stderr is not None else None
        print(f"  difference (grid - search): {a.value - b.value:.4g}" + (f" ± {se:.2g}" if se is not None else ""))
    if found:
        print(f"found path on the grid's Pareto frontier: {'yes' if found in front else 'no'}"
              f"{'; it is the grid optimum' if found == optimum else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", type=Path, default=ROOT / "benchmarks" / "search.yaml", help="the search spec")
    ap.add_argument("--write-grid", type=Path, help="write the spec without search: (the whole grid) here and exit")
    ap.add_argument("--db", type=Path, default=Path(".slm-search/results.duckdb"), help="the results database")
    ap.add_argument("--grid-name", help="the grid run's spec name (default: <search name>-grid; "
                    "effects-grid for benchmarks/search.yaml run after benchmarks/effects_grid.yaml)")
    args = ap.parse_args()
    if args.write_grid:
        write_grid(args.spec, args.write_grid)
    else:
        report(args.spec, args.db, args.grid_name)


if __name__ == "__main__":
    main()
