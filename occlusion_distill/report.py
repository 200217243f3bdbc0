"""The only module that writes to the console: rich progress bars, messages and result tables.

The engine talks to a reporter object: ``RichReporter`` for the CLI, ``NullReporter`` for library use
and tests (silent).
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text


class _NullBar:
    def advance(self, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class NullReporter:
    """Reports nothing (library use, tests)."""

    def stage(self, name: str, total: int) -> _NullBar:
        return _NullBar()

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, name: str, total: int):
        self.progress = progress
        self.task = progress.add_task(name, total=total, note="")

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def note(self, text: str) -> None:
        self.progress.update(self.task, note=text)

    def close(self) -> None:
        self.progress.stop()


class RichReporter:
    """Progress bars and messages on stderr; result tables on stdout."""

    def __init__(self, quiet: bool = False):
        self.err = Console(stderr=True, highlight=False)
        self.out = Console(highlight=False)
        self.quiet = quiet

    def stage(self, name: str, total: int) -> _Bar | _NullBar:
        if self.quiet:
            return _NullBar()
        progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description:<8}"), BarColumn(bar_width=18),
                            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[note]}"),
                            console=self.err, transient=False, disable=False)
        progress.start()
        return _Bar(progress, name, total)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[dim]·[/dim] {message}")

    def warn(self, message: str) -> None:
        self.err.print(f"occdistill: warning: {message}", markup=False, highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        # Plain text on one line: messages quote paths and options, which must not read as markup.
        self.err.print(f"occdistill: error: {message}", markup=False, highlight=False, soft_wrap=True)

    def results(self, metrics: dict[str, Any], run_dir: str | None = None) -> None:
        m, unit = metrics["metric"], metrics.get("unit", "")
        better = "higher" if metrics["higher_is_better"] else "lower"
        table = Table(title=f"{metrics['task']} under {metrics['occlusion']}: {m} "
                            f"({unit + ', ' if unit else ''}{better} is better)")
        table.add_column("model")
        table.add_column("test faces")
        table.add_column(m, justify="right")
        from .engine.artifacts import GAP_UNDEFINED, result_rows

        for name, faces, value in result_rows(metrics):
            table.add_row(name, faces, f"{value:.2f}")
        self.out.print(table)
        gap = metrics.get("gap_closed")
        self.out.print(f"gap closed by {metrics['distiller']}: "
                       + (f"{100 * gap:.1f}%" if gap is not None else GAP_UNDEFINED)
                       + f"   ·   {metrics['seconds']['total']:.0f} s")
        if run_dir:
            self.out.print(f"run directory: {run_dir}")

    def plugin_table(self, listing: dict[str, list[dict[str, str]]]) -> None:
        for kind, entries in listing.items():
            caption = "any timm model name works too, e.g. convnext_tiny" if kind == "backbones" else None
            table = Table(title=kind, title_justify="left", show_lines=False, caption=caption,
                          caption_justify="left")
            table.add_column("name", style="bold")
            table.add_column("description")
            table.add_column("origin", style="dim")
            for e in entries:
                table.add_row(e["name"], e["description"], e["origin"])
            self.out.print(table)

    def occlusion_bench(self, result: dict[str, Any]) -> None:
        ref = result["reference"]
        setup = result["setup"]
        table = Table(title=f"occlusions: speed (one thread, {setup['image_size']} px RGB) and % of each region "
                            f"hidden ({setup['faces']} built-in faces of varied pose)",
                      title_justify="left", caption=f"x ref: speed relative to {ref['name']}, "
                                                    f"{ref['images_per_s']:.0f} images/s in the same run",
                      caption_justify="left")
        regions = next((list(e["coverage"]) for e in result["occlusions"].values() if "coverage" in e), [])
        table.add_column("occlusion", style="bold", no_wrap=True)
        table.add_column("img/s", justify="right")
        table.add_column("x ref", justify="right")
        for region in regions:
            table.add_column(region, justify="right")
        for name, e in result["occlusions"].items():
            if "error" in e:
                table.add_row(name, Text("failed", style="red"), "", Text(e["error"][:80]))
                continue
            shares = ["-" if v is None else f"{100 * v:.1f}" for v in e["coverage"].values()]
            table.add_row(name, f"{e['images_per_s']:.0f}", f"{e['relative']:.2f}", *shares)
        self.out.print(table)

    def print_json(self, text: str) -> None:
        sys.stdout.write(text + "\n")
