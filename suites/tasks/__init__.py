"""lm-eval task definitions shipped with the package: the built-in probes and the standard benchmarks read
from local files. ``TASKS_DIR`` is an lm-eval include path: ``lm_eval --include_path <TASKS_DIR>`` runs the
same tasks as the quality suite (local data from ``SLM_DATA_DIR`` or ``--metadata '{"data_dir": ...}'``).
"""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
