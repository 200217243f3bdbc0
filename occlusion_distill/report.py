"""The only module that writes to the console: rich progress bars, messages and result tables.

The protocol talks to a reporter (``protocol.reporting.Reporter``: ``stage``, ``info``, ``warn``):
``RichReporter`` for the CLI, ``NullReporter`` for library use and tests (silent).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from .protocol.reporting import NullBar as _NullBar
from .protocol.reporting import NullReporter as _SilentProtocolReporter


class NullReporter(_SilentProtocolReporter):
    """Reports nothing (library use, tests); also a silent ``suite`` bar for ``bench run``."""

    @contextmanager
    def suite(self, total: int, completed: int = 0) -> Iterator[_NullBar]:
        yield _NullBar()


class _Bar:
    def __init__(self, progress: Progress, name: str, total: int, shared: bool = False, completed: int = 0):
        self.progress = progress
        self.shared = shared  # a row of the suite's display: removed when done, the display stays
        self.task = progress.add_task(name, total=total, note="", completed=completed)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def note(self, text: str) -> None:
        self.progress.update(self.task, note=text)

    def close(self) -> None:
        if self.shared:
            self.progress.remove_task(self.task)
        else:
            self.progress.stop()


def landmark_summary(manifest: dict[str, Any]) -> str:
    """Where a prepared set's landmarks came from, in words, from its manifest alone (so the summary
    can never say other than the manifest does)."""
    lm = manifest["landmarks"]
    used: dict[str, int] = {}
    for per_split in lm["per_split"].values():
        for source, n in per_split.items():
            used[source] = used.get(source, 0) + n
    if lm["method"] == "mtcnn":
        return (f"landmarks: MTCNN found {100 * lm['detection_rate']:.1f}% of faces ({used.get('mtcnn', 0):,}); "
                f"the template stands in for the other {used.get('template', 0):,}")
    if lm["method"] == "given":
        return f"landmarks: the data set's own annotation for all {used.get('given', 0):,} faces"
    return f"landmarks: the data set's template for all {used.get('template', 0):,} faces (no detection)"


class RichReporter:
    """Progress bars and messages on stderr; result tables on stdout. A ``protocol.reporting.Reporter``."""

    def __init__(self, quiet: bool = False):
        self.err = Console(stderr=True, highlight=False)
        self.out = Console(highlight=False)
        self.quiet = quiet
        self._suite: Progress | None = None

    def _progress(self, transient: bool = False) -> Progress:
        return Progress(SpinnerColumn(), TextColumn("[bold]{task.description:<8}"), BarColumn(bar_width=18),
                        MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[note]}"), console=self.err, transient=transient)

    def stage(self, name: str, total: int) -> _Bar | _NullBar:
        if self.quiet:
            return _NullBar()
        if self._suite is not None:  # one live display: the stage is a row under the suite's bar
            return _Bar(self._suite, name, total, shared=True)
        progress = self._progress()
        progress.start()
        return _Bar(progress, name, total)

    @contextmanager
    def suite(self, total: int, completed: int = 0) -> Iterator[_Bar | _NullBar]:
        """A bar for the whole suite (runs done of all), with each run's stage bars below it."""
        if self.quiet:
            yield _NullBar()
            return
        progress = self._progress()
        progress.start()
        self._suite = progress
        try:
            yield _Bar(progress, "suite", total, shared=True, completed=completed)
        finally:
            self._suite = None
            progress.stop()

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
        from .protocol.artifacts import GAP_UNDEFINED, result_rows

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

    def plugin_check(self, report: dict[str, Any]) -> None:
        """One plugin's contract checks: a row per check, pass or FAIL, and what was seen."""
        verdict = Text("passed", style="green") if report["passed"] else Text("FAILED", style="bold red")
        title = Text.assemble((report["name"], "bold"), f" ({report['kind'][:-1]}, {report['origin']}): ", verdict)
        table = Table(title=title, title_justify="left")
        by_task = any(r.get("task") for r in report["results"])
        table.add_column("check", no_wrap=True)
        if by_task:
            table.add_column("task", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_column("detail")
        for r in report["results"]:
            mark = Text("pass", style="green") if r["passed"] else Text("FAIL", style="bold red")
            table.add_row(r["check"], *([r["task"] or ""] if by_task else []), mark, Text(r["detail"]))
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

    def data_summary(self, manifest: dict[str, Any], out: str) -> None:
        counts = ", ".join(f"{s} {n:,}" for s, n in manifest["counts"].items())
        self.out.print(f"{manifest['dataset']} -> {out}: {counts} faces stored", soft_wrap=True)
        self.out.print(f"{landmark_summary(manifest)}; {manifest['seconds']['total']:.0f} s in all, "
                       f"{manifest['faces_per_s']:.0f} faces/s", markup=False, soft_wrap=True)
        for key, what in (("skipped", "skipped"), ("ignored", "ignored (not faces)")):
            if manifest.get(f"{key}_total"):
                self.out.print(f"{what} {manifest[f'{key}_total']:,}: " + "; ".join(
                    f"{reason} ({v['count']})" for reason, v in manifest[key].items()), markup=False, soft_wrap=True)
        for key, value in manifest.get("notes", {}).items():
            if isinstance(value, list) and value:
                self.out.print(f"{key.replace('_', ' ')} ({len(value)}): {', '.join(value[:10])}", markup=False, soft_wrap=True)
            elif not isinstance(value, list):
                self.out.print(f"{key.replace('_', ' ')}: {value}", markup=False, soft_wrap=True)

    def data_info(self, info: dict[str, Any]) -> None:
        sel = ", ".join(f"{k}={v}" for k, v in info["selection"].items())
        table = Table(title=f"{info['dataset']} in {info['root']} ({info['image_size']} px, "
                            f"{'grey' if info['channels'] == 1 else 'RGB'}{', ' + sel if sel else ''})",
                      title_justify="left")
        table.add_column("split", style="bold")
        table.add_column("stored", justify="right")
        table.add_column("used", justify="right")
        table.add_column("labels")
        table.add_column("landmarks")
        for split, e in info["splits"].items():
            parts = []
            for key, value in e.items():
                if key in ("stored", "used", "landmarks"):
                    continue
                if value and "mean" in value:
                    parts.append(f"{key}: {value['min']:.0f}-{value['max']:.0f}, mean {value['mean']:.1f} "
                                 f"± {value['std']:.1f}")
                elif value:
                    parts.append(f"{key}: " + " ".join(f"{c} {n}" for c, n in value.items()))
            lms = " ".join(f"{s} {n}" for s, n in e["landmarks"].items())
            table.add_row(split, f"{e['stored']:,}", f"{e['used']:,}", Text("\n".join(parts)), lms)
        self.out.print(table)
        lm = info["landmarks"]
        if lm["mean_detected"] is not None:
            self.out.print(f"landmark template (mean detected position / size): {lm['mean_detected']}", markup=False)
        for key, what in (("skipped", "skipped"), ("ignored", "ignored (not faces)")):
            if info.get(key):
                self.out.print(f"{what}: " + "; ".join(f"{r} ({v['count']})" for r, v in info[key].items()),
                               markup=False)

    def data_bench(self, r: dict[str, Any]) -> None:
        table = Table(title=f"input pipeline vs training: {r['dataset']}, {r['occlusion']}, {r['image_size']} px, "
                            f"batch {r['batch_size']}, {r['num_workers']} workers, {r['torch_threads']} torch threads",
                      title_justify="left")
        table.add_column("what")
        table.add_column("samples/s", justify="right")
        table.add_row("input pipeline (read, flip, occlude, tensor)", f"{r['input_samples_per_s']:.0f}")
        table.add_row(f"training steps ({r['backbone']})", f"{r['train_samples_per_s']:.0f}")
        self.out.print(table)
        verdict = "enough" if r["input_over_train"] >= 2 else "NOT enough: training waits on data"
        self.out.print(f"input / training = {r['input_over_train']:.2f}x ({verdict}; the target is >= 2x)")

    def overhead_bench(self, r: dict[str, Any]) -> None:
        setup = r["setup"]
        table = Table(title=f"epoch cost: {setup['backbone']}, {setup['faces']} faces of {setup['image_size']} px, "
                            f"batch {setup['batch_size']}", title_justify="left",
                      caption=f"teacher outputs computed once per run: {setup['teacher_table_seconds']:.1f} s; "
                              "+augment: pairs augmented (--augment default), the teacher run on each batch",
                      caption_justify="left")
        table.add_column("distiller", style="bold")
        table.add_column("s / epoch", justify="right")
        table.add_column("x finetune", justify="right")
        for name, sec in r["epoch_seconds"].items():
            table.add_row(name, f"{sec:.1f}", f"{r['ratio_to_finetune'][name]:.2f}")
        self.out.print(table)
        table = Table(title=f"mining one batch ({setup['batch_size']} queries, {setup['embedding_dim']}-d); a "
                            f"finetune step takes {setup['finetune_step_ms']:.0f} ms", title_justify="left")
        table.add_column("bank", justify="right")
        table.add_column("faiss index")
        table.add_column("faiss ms", justify="right")
        table.add_column("torch ms", justify="right")
        table.add_column("faiss / step", justify="right")
        for size, m in r["mining_ms_per_step"].items():
            table.add_row(f"{int(size):,}", m["index"], f"{m['faiss']:.2f}", f"{m['torch']:.2f}",
                          f"{100 * m['share_of_step']:.1f}%")
        self.out.print(table)

    def print_json(self, text: str) -> None:
        sys.stdout.write(text + "\n")

    def suite_cells(self, suite: Any, runs: int, cells: list[Any] | None = None, seeds: tuple[int, ...] = ()) -> None:
        """``bench run --check``: the cells a suite would run (``cells``: those ``--only`` selected; ``seeds``:
        those ``--seed`` selected, which the check does not narrow: a cell is checked at every seed)."""
        cells = suite.cells if cells is None else cells
        checked = "all checked" if len(cells) == len(suite.cells) else f"{len(cells)} selected by --only, checked"
        if seeds:
            checked += f"; --seed {', '.join(map(str, seeds))} would run {len(cells) * len(seeds)} of them"
        table = Table(title=f"suite {suite.name} ({suite.path}): {len(suite.cells)} cells x {len(suite.seeds)} seeds "
                            f"= {runs} runs; {checked}", title_justify="left")
        for col in ("cell", "backbone", "px", "epochs (teacher/student)", "data"):
            table.add_column(col)
        for cell in cells:
            cfg = cell.config(suite.seeds[0], suite.preset)
            table.add_row(cell.id, cfg.backbone, str(cfg.image_size), f"{cfg.teacher_epochs}/{cfg.student_epochs}",
                          str(cfg.dataset_args.get("data", "built-in")))
        self.out.print(table)
