"""What a person sees while ``slm run`` works: technique steps and suite runs, each with elapsed time and an ETA.

On a terminal, two rich bars that redraw in place; when stdout is not a terminal (CI logs, a pipe), one plain
line per finished item instead, so a log holds no redraw escapes. The ETA is the mean time of the items
finished so far times the items left (``—`` until one has finished). Every event also goes to the
``slm.run`` logger, i.e. into the run's log file when one is set up (:func:`adapters.runtime.library_output_to`).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

log = logging.getLogger("slm.run")


def clock(seconds: float | None) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour); ``—`` for None."""
    if seconds is None:
        return "—"
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class Stage:
    """One kind of work (technique steps or suite runs): how many, how many done, since when."""

    name: str
    total: int
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    first_start: float | None = None
    ended: float | None = None

    def elapsed(self) -> float:
        end = self.ended if self.ended is not None else time.monotonic()
        return end - (self.first_start if self.first_start is not None else self.started)

    def times(self) -> str:
        if self.first_start is None:
            return "waiting"
        if self.done >= self.total:
            return f"took {clock(self.elapsed())}"
        return f"elapsed {clock(self.elapsed())}  ETA {clock(self.eta())}"

    def eta(self) -> float | None:
        """Mean time per finished item times the items left; None before the first finishes."""
        if not self.done or self.first_start is None:
            return None
        return self.elapsed() / self.done * (self.total - self.done)


class RunProgress:
    """The run's progress display (rich bars on a terminal, plain lines otherwise); silent when ``enabled`` is
    False. ``out``: where it writes (default: ``sys.stdout`` when entered)."""

    def __init__(self, enabled: bool = True, out: TextIO | None = None):
        self.enabled = enabled
        self.out = out
        self._progress: Any = None
        self._ids: dict[str, Any] = {}
        self.stages: dict[str, Stage] = {}

    def __enter__(self) -> RunProgress:
        self.out = self.out or sys.stdout
        if self.enabled and self.out.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
            from rich.text import Text

            stages = self.stages

            class Times(ProgressColumn):  # computed at each redraw: elapsed keeps ticking between events
                def render(self, task: Any) -> Text:
                    return Text(stages[task.fields["key"]].times(), style="cyan")

            # redirect_*=False: library output must not be echoed above the bars (it goes to the log file)
            self._progress = Progress(TextColumn("{task.description:<56.56}"), BarColumn(bar_width=24),
                                      MofNCompleteColumn(), Times(), console=Console(file=self.out),
                                      redirect_stdout=False, redirect_stderr=False)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- the runner's events -----------------------------------------------------------------------
    def start_steps(self, total: int) -> None:
        self._start("steps", "technique steps", total)

    def start_suites(self, total: int) -> None:
        self._start("suites", "suite runs", total)

    def step_begin(self, label: str) -> None:
        self._begin("steps", f"step: {label}")

    def step_done(self, label: str, ok: bool) -> None:
        self._done("steps", label, ok)

    def suite_begin(self, label: str) -> None:
        self._begin("suites", f"suite: {label}")

    def suite_done(self, label: str, ok: bool) -> None:
        self._done("suites", label, ok)

    # -- drawing ------------------------------------------------------------------------------------
    def _start(self, key: str, name: str, total: int) -> None:
        self.stages[key] = Stage(name, max(total, 0))
        log.info("%s to do: %d", name, total)
        if self._progress is not None and total:
            self._ids[key] = self._progress.add_task(name, total=total, key=key)
        elif self.enabled and self.out is not None and total:
            self._line(f"{name}: {total} to do")

    def _begin(self, key: str, text: str) -> None:
        stage = self.stages.get(key)
        if stage is None:
            return
        if stage.first_start is None:
            stage.first_start = time.monotonic()
        log.info("begin %s", text)
        if key in self._ids:
            self._progress.update(self._ids[key], description=text)

    def _done(self, key: str, label: str, ok: bool) -> None:
        stage = self.stages.get(key)
        if stage is None:
            return
        stage.done += 1
        stage.failed += not ok
        if stage.done >= stage.total:
            stage.ended = time.monotonic()
        verdict = "done" if ok else "FAILED"
        log.info("%s %s (%d/%d)", verdict, label, stage.done, stage.total)
        if key in self._ids:
            self._progress.advance(self._ids[key])
            if not ok:
                self._progress.console.print(f"[red]failed[/red] {_markup_safe(label)}")
            if stage.done >= stage.total:
                self._progress.update(self._ids[key], description=stage.name)
        elif self.enabled and self.out is not None:
            self._line(f"[{stage.done}/{stage.total} {stage.name}] {verdict} {label}  "
                       f"(elapsed {clock(stage.elapsed())}, ETA {clock(stage.eta())})")

    def _line(self, text: str) -> None:
        from results.report import printable

        assert self.out is not None
        self.out.write(printable(text) + "\n")
        self.out.flush()


def _markup_safe(text: str) -> str:
    from rich.markup import escape

    from results.report import printable

    return escape(printable(text))
