"""Progress bars with ETA for technique steps and suite runs (rich), quiet when disabled."""

from __future__ import annotations

from typing import Any


class RunProgress:
    """Two bars: technique steps and suite runs. A no-op when ``enabled`` is False."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._progress: Any = None
        self._steps: Any = None
        self._suites: Any = None

    def __enter__(self) -> RunProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description:<60.60}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.log(message)

    def start_steps(self, total: int) -> None:
        if self._progress is not None:
            self._steps = self._progress.add_task("technique steps", total=max(total, 0))

    def step_begin(self, label: str) -> None:
        if self._steps is not None:
            self._progress.update(self._steps, description=f"step: {label}")

    def step_done(self, label: str, ok: bool) -> None:
        if self._steps is not None:
            self._progress.advance(self._steps)
            if not ok:
                self._log(f"[red]failed[/red] {label}")

    def start_suites(self, total: int) -> None:
        if self._progress is not None:
            if self._steps is not None:
                self._progress.update(self._steps, description="technique steps")
            self._suites = self._progress.add_task("suite runs", total=max(total, 0))

    def suite_begin(self, label: str) -> None:
        if self._suites is not None:
            self._progress.update(self._suites, description=f"suite: {label}")

    def suite_done(self, label: str, ok: bool) -> None:
        if self._suites is not None:
            self._progress.advance(self._suites)
            if not ok:
                self._log(f"[red]failed[/red] {label}")
