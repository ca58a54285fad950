"""Printing run summaries as a table (methods x protocols, accuracy +- the papers' 95% interval)."""
from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table


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


def summaries_table(summaries: list[dict], title: str = "few-shot accuracy (%)") -> Table:
    summaries = [{**s, "protocol": protocol_label(s)} for s in summaries]
    protocols = list(dict.fromkeys(s["protocol"] for s in summaries))
    method_names = list(dict.fromkeys(s["method"] for s in summaries))
    cell = {(s["method"], s["protocol"]): s for s in summaries}
    best = {p: max(s["accuracy"] for s in summaries if s["protocol"] == p) for p in protocols}
    table = Table(title=title, caption="mean accuracy +- 1.96 x std / sqrt(n) over n episodes (the papers' interval); (best) per protocol; NAME*: a shipped protocol changed for this run")
    table.add_column("method")
    for p in protocols:
        n = {s["n_episodes"] for s in summaries if s["protocol"] == p}
        table.add_column(f"{p}\n(n={'/'.join(map(str, sorted(n)))})", justify="right")
    for m in method_names:
        row = [m]
        for p in protocols:
            s = cell.get((m, p))
            if s is None:
                row.append("-")
            else:
                mark = " (best)" if s["accuracy"] == best[p] and len(method_names) > 1 else ""
                row.append(f"{s['accuracy']:.2f} +- {s['ci95']:.2f}{mark}")
        table.add_row(*row)
    return table


def print_summaries(summaries: list[dict]) -> None:
    Console().print(summaries_table(summaries))
    for note in dict.fromkeys(filter(None, map(modified_note, summaries))):
        print(note)
    for s in summaries:
        print(f"{s['method']} on {protocol_label(s)}: {s['accuracy']:.2f} +- {s['ci95']:.2f} "
              f"(t-interval {s['t_interval95'][0]:.2f}-{s['t_interval95'][1]:.2f}), episodes {s['episode_set_sha256'][:12]}, records {s['records_path']}")
