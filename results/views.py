"""The documented SQL views over the results tables.

``metrics_long``
    One row per (path, suite, task, metric): path_id, path_name, base, hardware_profile, run_id, run_key,
    node_hash, suite, profile, task, metric, value, stderr, n, unit, higher_is_better, method, is_estimate,
    details, recorded_at. A path's metrics are those of the suite runs on its leaf node under its hardware
    profile; when a metric was measured more than once (e.g. another suite profile), the latest wins.
``leaderboard``
    One row per path: path_id, path_name, base, hardware_profile, steps (JSON), n_steps, then for every
    headline metric (:data:`HEADLINES`) the columns ``<name>``, ``<name>_stderr``, ``<name>_n`` and
    ``<name>_estimate``.
``metrics_wide``
    One row per path, one column per ``suite/task/metric`` (values only).
``node_costs``
    One row per technique node: node_hash, technique, technique_version, params, status, wall_time_s,
    peak_rss_bytes, energy_j, energy_method, energy_is_estimate, artifact_bytes, format, report. That is the
    cost of the lifecycle step (wall time, peak RSS, energy and its method), the size of its stored artifact
    on disk (``artifact_bytes``; none for inference-time steps), the artifact format of the model it produced
    (``format``: torch, torch-sparse, torch-lowrank, torch-int8-dynamic, quanto, compressed-tensors, onnx) and
    the technique's report of its own work (``report``, JSON: e.g. ``sparsity`` and ``pruned_weights`` for
    pruning, ``kl_before``/``kl_after`` for distillation, ``first_loss``/``final_loss`` for training, ``bits``
    and ``group_size`` for quantization). Both are null for nodes recorded before schema v4 and ``report`` is
    null for techniques that report nothing.
``trajectories``
    One row per (path, position in its chain, suite, task, metric) for every node of the chain that was measured
    (the base at position 0; intermediate nodes only with ``evaluate: all``): path_id, path_name, base,
    hardware_profile, position, chain_length, node_hash, technique (null for the base), run_id, run_key, suite,
    profile, task, metric, value, stderr, n, unit, higher_is_better, method, is_estimate, recorded_at. The latest
    measurement of a node under the path's hardware profile wins, as in ``metrics_long``.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class Headline:
    """A headline column of the leaderboard: the mean of the matching metrics of one suite.

    Attributes:
        name: column name.
        label: what the site shows.
        suite: the suite the metric comes from.
        metrics: metric names that count (SQL LIKE patterns); tasks are averaged.
        task: SQL LIKE pattern on the task.
        unit: unit of the column.
        higher_is_better: direction.
    """

    name: str
    label: str
    suite: str
    metrics: tuple[str, ...]
    task: str
    unit: str
    higher_is_better: bool


HEADLINES: tuple[Headline, ...] = (
    Headline("quality", "quality (mean acc)", "quality", ("acc", "exact_match%"), "%", "fraction", True),
    Headline("lm_bpb", "language modelling (bits/byte)", "quality", ("bits_per_byte",), "%", "bits/byte", False),
    Headline("trust", "trust (mean retention)", "trust", ("retention_%",), "%", "ratio", True),
    Headline("decode_tps", "decode tokens/s (batch 1)", "latency", ("decode_tokens_per_s",), "p%b1", "tokens/s",
             True),
    Headline("ttft_s", "time to first token (batch 1)", "latency", ("ttft_s",), "p%b1", "s", False),
    Headline("peak_rss", "peak RSS (generate)", "memory", ("peak_rss_generate",), "%", "bytes", False),
    Headline("energy_per_token", "energy per decode token", "energy", ("decode_j_per_token",), "%", "J/token",
             False),
)

_METRICS_LONG = """
CREATE OR REPLACE VIEW metrics_long AS
SELECT p.path_id, p.name AS path_name, p.base, p.hardware_profile, sr.run_id, sr.run_key, sr.node_hash,
       m.suite, sr.profile, m.task, m.metric, m.value, m.stderr, m.n, m.unit, m.higher_is_better, m.method,
       starts_with(m.method, 'estimated') AS is_estimate, m.details, sr.recorded_at
FROM paths p
JOIN suite_runs sr ON sr.node_hash = p.leaf_hash AND sr.hardware_profile = p.hardware_profile AND sr.status = 'ok'
JOIN metrics m ON m.run_key = sr.run_key
QUALIFY row_number() OVER (PARTITION BY p.path_id, m.suite, m.task, m.metric ORDER BY sr.recorded_at DESC) = 1
"""

_NODE_COSTS = """
CREATE OR REPLACE VIEW node_costs AS
SELECT node_hash, technique, technique_version, params, status, wall_time_s, peak_rss_bytes, energy_j,
       energy_method, starts_with(coalesce(energy_method, ''), 'estimated') AS energy_is_estimate, artifact_bytes,
       format, report
FROM nodes WHERE technique IS NOT NULL
"""

#: the query behind the ``trajectories`` view (also run directly on a database opened read-only before the view existed)
TRAJECTORIES_SELECT = """
WITH chain AS (
    SELECT p.path_id, p.name AS path_name, p.base, p.hardware_profile, pos.position,
           json_array_length(p.chain) AS chain_length,
           json_extract_string(p.chain, '$[' || pos.position || ']') AS node_hash
    FROM paths p, LATERAL (SELECT unnest(range(json_array_length(p.chain)::BIGINT)) AS position) pos
)
SELECT c.path_id, c.path_name, c.base, c.hardware_profile, c.position, c.chain_length, c.node_hash, n.technique,
       sr.run_id, sr.run_key, m.suite, sr.profile, m.task, m.metric, m.value, m.stderr, m.n, m.unit,
       m.higher_is_better, m.method, starts_with(m.method, 'estimated') AS is_estimate, sr.recorded_at
FROM chain c
LEFT JOIN nodes n ON n.node_hash = c.node_hash
JOIN suite_runs sr ON sr.node_hash = c.node_hash AND sr.hardware_profile = c.hardware_profile AND sr.status = 'ok'
JOIN metrics m ON m.run_key = sr.run_key
QUALIFY row_number() OVER (PARTITION BY c.path_id, c.position, m.suite, m.task, m.metric
                           ORDER BY sr.recorded_at DESC) = 1
"""
_TRAJECTORIES = f"CREATE OR REPLACE VIEW trajectories AS {TRAJECTORIES_SELECT}"


def _headline_sql(h: Headline) -> str:
    like = " OR ".join(f"metric LIKE '{m}'" for m in h.metrics)
    where = f"suite = '{h.suite}' AND task LIKE '{h.task}' AND ({like})"
    return (
        f"avg(value) FILTER (WHERE {where}) AS {h.name}, "
        f"sqrt(sum(stderr * stderr) FILTER (WHERE {where})) / nullif(count(stderr) FILTER (WHERE {where}), 0) "
        f"AS {h.name}_stderr, "
        f"sum(n) FILTER (WHERE {where}) AS {h.name}_n, "
        f"bool_or(is_estimate) FILTER (WHERE {where}) AS {h.name}_estimate"
    )


def leaderboard_sql() -> str:
    cols = ",\n       ".join(_headline_sql(h) for h in HEADLINES)
    return f"""
CREATE OR REPLACE VIEW leaderboard AS
SELECT p.path_id, p.name AS path_name, p.base, p.hardware_profile, p.steps, json_array_length(p.steps) AS n_steps,
       {cols}
FROM paths p LEFT JOIN metrics_long ml ON ml.path_id = p.path_id
GROUP BY ALL
"""


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every view; ``metrics_wide`` lists the metric keys present now."""
    con.execute(_METRICS_LONG)
    con.execute(_NODE_COSTS)
    con.execute(_TRAJECTORIES)
    con.execute(leaderboard_sql())
    refresh_metrics_wide(con)


def refresh_metrics_wide(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB cannot PIVOT on values found at query time inside a view, so the keys are listed explicitly."""
    keys = [r[0] for r in con.execute(
        "SELECT DISTINCT suite || '/' || task || '/' || metric AS k FROM metrics ORDER BY k").fetchall()]
    if not keys:
        con.execute("CREATE OR REPLACE VIEW metrics_wide AS SELECT path_id, name AS path_name, hardware_profile "
                    "FROM paths")
        return
    values = ", ".join(_quote(k) for k in keys)
    con.execute(
        "CREATE OR REPLACE VIEW metrics_wide AS PIVOT ("
        "SELECT path_id, path_name, hardware_profile, suite || '/' || task || '/' || metric AS k, value "
        f"FROM metrics_long) ON k IN ({values}) USING first(value) GROUP BY path_id, path_name, hardware_profile"
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
