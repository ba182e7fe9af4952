"""The workspace: ``.slm/`` in the current directory unless ``--workspace`` or ``$SLM_HOME`` say otherwise."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_workspace(option: str | Path | None = None) -> Path:
    """``--workspace`` wins, then ``$SLM_HOME``, then ``./.slm``. The choice is exported as
    ``SLM_HOME`` so that worker processes and the model cache agree on it."""
    ws = Path(option) if option else Path(os.environ.get("SLM_HOME", ".slm"))
    ws = ws.expanduser().resolve()
    os.environ["SLM_HOME"] = str(ws)
    return ws
