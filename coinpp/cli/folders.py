"""Folders on the command line: run a batch with a progress display, print its report."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..batch import Report, parse_shard
from ..errors import InputError
from .common import console, err_console


def run_batch(run: Callable[[Callable], Report], as_json: bool, quiet: bool = False) -> None:
    """Run a folder job with a progress display, then print the summary (or JSON) and set the exit
    status: 1 if any file failed or the batch stopped early, 130 after Ctrl-C. `quiet`: no progress
    and no summary, only the failed files."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[io]}"), TimeRemainingColumn(), TextColumn("{task.fields[current]}"))
    with Progress(*columns, console=err_console, disable=quiet or not sys.stderr.isatty()) as bar:
        task = bar.add_task("files", total=None, io="", current="")
        totals = {"in": 0, "out": 0, "done": 0}

        def on_event(kind: str, item, report) -> None:
            if bar.tasks[task].total is None:
                bar.update(task, total=sum(i.status not in ("exists", "unknown") for i in report.items))
            if kind == "start":
                bar.update(task, current=item.file)
                return
            totals["done"] += 1
            if item.status == "done":
                totals["in"] += item.bytes_in
                totals["out"] += item.bytes_out
            bar.update(task, completed=totals["done"],
                       io=f"{totals['in'] / 1e6:.1f} MB -> {totals['out'] / 1e6:.2f} MB")

        report = run(on_event)
    rec = report.to_dict()
    if as_json:
        click.echo(json.dumps(rec, indent=1))
    elif quiet:
        for failed in rec["failed"]:
            click.echo(f"coin: error: {failed['file']}: {failed['error']}", err=True)
    else:
        print_summary(rec)
    if report.stopped == "interrupted":
        err_console.print("coin: interrupted; finished files are intact, rerun to resume")
        sys.exit(130)
    if report.failed or report.stopped:
        sys.exit(1)


def print_summary(rec: dict) -> None:
    t = Table(title=f"coin {rec['command']} {rec['input']} -> {rec['output']}", show_header=False)
    t.add_row("files done", f"{rec['done']} of {rec['files']} in {rec['seconds']:.1f} s"
              + (f" ({rec['files_per_s']:.2f} files/s, {rec['mb_per_s']:.2f} MB/s)" if rec["done"] else ""))
    t.add_row("bytes", f"{rec['bytes_in']:,} -> {rec['bytes_out']:,}"
              + (f" (ratio {rec['ratio']:.1f})" if rec["ratio"] else ""))
    for k, v in rec["mean_quality"].items():  # RMSE and max error are in each file's own units
        t.add_row(f"mean {k.upper().replace('_', ' ')}", f"{v:.2f} dB" if k in ("psnr", "snr") else f"{v:.4g}")
    if rec["existing_skipped"]:
        t.add_row("already there", f"{rec['existing_skipped']} skipped (use --force to redo)")
    if rec["unknown_skipped"]:
        t.add_row("unknown type", ", ".join(rec["unknown_skipped"][:10])
                  + (f" and {len(rec['unknown_skipped']) - 10} more" if len(rec["unknown_skipped"]) > 10 else ""))
    for f in rec["failed"]:
        t.add_row("[red]failed[/red]", f"{f['file']}: {f['error']}")
    if rec["stopped"]:
        t.add_row("[red]stopped[/red]", f"{rec['stopped']}; {rec['not_run']} files not run")
    console.print(t)


def shard_and_jobs(shard: str | None, jobs: int) -> tuple[int, int] | None:
    if jobs < 1:
        raise InputError("--jobs must be at least 1")
    return parse_shard(shard)
