"""Printing run summaries as a table (methods x protocols): the accuracy with the papers' 95% interval and a
second, labelled interval (`videos` unless `--interval` says otherwise); what each one means is said in words.

The cell formats and the legend are shared with the leaderboard (harness/leaderboard.py):

    62.31 (videos 60.92–63.70; episodes ± 0.43)     --interval videos (the default), or classes
    62.31 ± 0.43 (videos 60.92–63.70)               --interval episodes: the papers' form first
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from rich.measure import Measurement
from rich.table import Table

from harness.console import Console  # a closed pipe ends the command quietly

#: the interval shown first (the headline) unless --interval says otherwise; harness/cli.py's default too
DEFAULT_INTERVAL = "videos"
#: what each level's interval covers, in the words of a caption
SAYS = {
    "episodes": "this pool of test videos (the papers' interval: 1.96 x population std / sqrt(n) over n episodes)",
    "videos": "new videos of the same classes (the test videos drawn again within their class)",
    "classes": "new classes and their new videos (the test classes drawn again)",
}

#: the same in a few words
SHORT = {"episodes": "this pool of test videos, the papers' ±", "videos": "new videos of the same classes", "classes": "new classes and their new videos"}


def second_level(headline: str) -> str:
    """The level shown beside the papers' ± (always shown): the headline, or `videos` when the headline is the
    papers' own `episodes`."""
    return "videos" if headline == "episodes" else headline


def interval_range(interval: dict) -> str:
    return f"{interval['low']:.2f}–{interval['high']:.2f}"


def interval_cell(accuracy: float, ci95: float, intervals: dict, headline: str = DEFAULT_INTERVAL) -> str:
    """The mean with the headline interval first and the papers' ± (the `episodes` level) always present, each
    labelled: '62.31 (videos 60.92–63.70; episodes ± 0.43)', or '62.31 ± 0.43 (videos 60.92–63.70)' when the
    headline is `episodes`."""
    level = second_level(headline)
    other = f"{level} {interval_range(intervals[level])}"
    if headline == "episodes":
        return f"{accuracy:.2f} ± {ci95:.2f} ({other})"
    return f"{accuracy:.2f} ({other}; episodes ± {ci95:.2f})"


def interval_legend(headline: str = DEFAULT_INTERVAL) -> str:
    """What the two intervals of a cell cover, in words (a caption or a footer line)."""
    level = second_level(headline)
    return (f"95% intervals. ± episodes: {SAYS['episodes']}; {level}: {SAYS[level]}. "
            f"Shown first: {headline} (--interval episodes|videos|classes); every level is in the csv and json")


def records_of(summary: dict):
    """A function that reads the run's records from its summary's `records_path` (for a summary without
    `intervals`, whose intervals are then recomputed)."""
    def read():
        from harness.verify import parse_records

        path = Path(summary["records_path"])
        return parse_records(path.read_bytes(), str(path))

    return read


def summary_intervals(summary: dict) -> dict:
    from harness.uncertainty import intervals_of

    return intervals_of(summary, records_of(summary))


def needed_width(*renderables) -> int:
    """The width at which none of `renderables` (tables) is wrapped."""
    console = Console(width=100_000, file=io.StringIO())
    return max(Measurement.get(console, console.options, r).maximum for r in renderables)


def wide_console(*tables) -> Console:
    """The terminal's console (its columns fold a cell that does not fit, never cut it); elsewhere (a pipe, a
    file, where rich would assume 80 columns) one wide enough that no table among `tables` is wrapped."""
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=max(console.width, needed_width(*tables)))


def protocol_label(summary: dict) -> str:
    """The protocol's name, with a * when it is a shipped protocol changed for this run (see `protocol_origin`)."""
    return summary["protocol"] + ("*" if (summary.get("protocol_origin") or {}).get("modified") else "")


def modified_note(summary: dict) -> str | None:
    """'NAME*: field shipped -> run; ...' for a changed shipped protocol, else None."""
    origin = summary.get("protocol_origin") or {}
    if not origin.get("modified"):
        return None
    fields = "; ".join(f"{k} {json.dumps(v['shipped'])} -> {json.dumps(v['run'])}" for k, v in origin["fields"].items())
    return f"{protocol_label(summary)}: the shipped protocol {summary['protocol']} changed for this run ({fields}); not comparable with its published numbers"


def summaries_table(summaries: list[dict], title: str = "few-shot accuracy (%) with 95% intervals", interval: str = DEFAULT_INTERVAL) -> Table:
    summaries = [{**s, "protocol": protocol_label(s), "intervals": summary_intervals(s)} for s in summaries]
    protocols = list(dict.fromkeys(s["protocol"] for s in summaries))
    method_names = list(dict.fromkeys(s["method"] for s in summaries))
    cell = {(s["method"], s["protocol"]): s for s in summaries}
    best = {p: max(s["accuracy"] for s in summaries if s["protocol"] == p) for p in protocols}
    table = Table(title=title, caption=f"mean accuracy over n episodes; {interval_legend(interval)}; (best) per protocol, by mean; "
                  "NAME*: a shipped protocol changed for this run", caption_justify="left")
    table.add_column("method", overflow="fold")
    for p in protocols:
        n = {s["n_episodes"] for s in summaries if s["protocol"] == p}
        table.add_column(f"{p}\n(n={'/'.join(map(str, sorted(n)))})", justify="right", overflow="fold")
    for m in method_names:
        row = [m]
        for p in protocols:
            s = cell.get((m, p))
            if s is None:
                row.append("-")
            else:
                mark = " (best)" if s["accuracy"] == best[p] and len(method_names) > 1 else ""
                row.append(interval_cell(s["accuracy"], s["ci95"], s["intervals"], interval) + mark)
        table.add_row(*row)
    return table


def print_summaries(summaries: list[dict], interval: str = DEFAULT_INTERVAL) -> None:
    table = summaries_table(summaries, interval=interval)
    wide_console(table).print(table)
    for note in dict.fromkeys(filter(None, map(modified_note, summaries))):
        print(note)
    for s in summaries:
        intervals = summary_intervals(s)
        order = (interval, *(level for level in intervals if level != interval))
        levels = "; ".join(f"{level} {interval_range(intervals[level])} ({SHORT[level]})" for level in order)
        print(f"{s['method']} on {protocol_label(s)}: {s['accuracy']:.2f} ± {s['ci95']:.2f} over {s['n_episodes']} episodes "
              f"(t-interval {s['t_interval95'][0]:.2f}–{s['t_interval95'][1]:.2f}), episode set {s['episode_set_sha256'][:12]}, records {s['records_path']}")
        print(f"  95% intervals: {levels}")
