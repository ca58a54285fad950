"""The leaderboard: methods x protocols from a results folder, every number traceable to its inputs.

    fsv-bench leaderboard [--results DIR] [--format rich|md|csv|json|latex|html] [--out FILE] [--plot FILE.png|svg]

Only verified runs are shown as measured (harness.verify: the records have the SHA-256 their summary names,
every record is well formed, and the summary's figures are the ones the records give). The accuracy shown is
recomputed from the records. A run that fails verification gets no cell, no rank and no point in the
picture: it is listed below the table (and as an `unverified` row in csv and json) with its folder and the
reason, so that it is never mistaken for a measurement.

Measured cells show the accuracy with two labelled 95% intervals (harness.report.interval_cell): the papers'
± (`episodes`: this pool of test videos) and `videos` (new videos of the same classes), or `classes` (new
classes) when `--interval classes` asks for it; `--interval` picks the one shown first, and the footer says
in words what each covers. csv and json carry the low and high of all three levels. Cells also show the best
per protocol (by mean; `compare` says whether a difference is significant) and a reference to a footer line
(rich, md) or sidecar columns (csv, json) with the protocol hash, episode-set hash, backbone and weights
hash, checkpoint hash, records hash and code version. Summaries older than schema 3 have no `intervals`:
theirs are computed from the verified records.

A run of a shipped protocol changed at run time (`--set`, or an edited copy under the shipped name: its
summary's `protocol_origin` says modified) is shown in a column of its own, `NAME*`, never beside the runs
of NAME as shipped, with a footnote listing each changed field as shipped and as run. Published numbers
(harness/reported.py) appear in a section of their own, only beside protocols of the same dataset, split,
way and shot whose every cell ran the shipped protocol unchanged (not beside `NAME*`, nor beside runs whose
summary predates `protocol_origin`: their origin is unknown).

Within a column, cells that differ are described by exactly what differs: the episode set, protocol fields
(dotted, with each value and its cells; `methods.<m>.<k>` is a method setting made in the protocol), the
harness version or backbone code, the data, the backbone weights. Cells whose episode set or protocol
(outside its `methods` section) differ are not comparable: they get set letters, and the best is marked
within each set only. Cells of different methods differ in their methods' settings by nature; that is no
warning.

`latex` (a booktabs tabular for a paper) and `html` (one static page for a website) are written by
harness/publish.py from the same cells.

The picture is drawn without any plotting library for SVG (written by hand below); PNG needs matplotlib,
imported only when a PNG is asked for.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from xml.sax.saxutils import escape

from harness.errors import HarnessError
from harness.files import atomic_write_bytes, atomic_write_text
from harness.protocol import leaf_fields
from harness.report import DEFAULT_INTERVAL, SAYS, interval_cell, interval_legend, needed_width, second_level, wide_console
from harness.reported import reported_for
from harness.uncertainty import LEVELS, check_level, intervals_of
from harness.verify import figures, load_verified

FORMATS = ("rich", "md", "csv", "json", "latex", "html")
SET_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _short(sha: str | None, n: int = 12) -> str:
    return sha[:n] if sha else "-"


def collect(results: Path) -> tuple[list[tuple[Path, dict, dict]], list[tuple[Path, str]]]:
    """(verified, unverified) runs: the latest finished run of every protocol and method, from
    <results>/<protocol>/<method>/summary.json (earlier runs are kept in runs/<fingerprint>/, not listed).
    verified: (run folder, summary, figures recomputed from its records); unverified: (run folder, why).
    Each pair is read under the folder's shared lock: never one run's summary beside another's records."""
    results = Path(results)
    if not results.is_dir():
        raise HarnessError(f"results folder {results} does not exist", fix="evaluate something first (fsv-bench run ...) or pass --results DIR")
    paths = sorted(results.glob("*/*/summary.json"))
    if not paths:
        raise HarnessError(f"no finished runs in {results} (no <protocol>/<method>/summary.json)", fix="evaluate something first: fsv-bench run --protocol P --method M")
    verified, unverified = [], []
    for path in paths:
        try:
            summary, records, _ = load_verified(path.parent)
        except HarnessError as e:
            unverified.append((path.parent, e.what))
            continue
        verified.append((path.parent, summary, {**figures(records), "intervals": intervals_of(summary, records)}))
    return verified, unverified


def _origin(summary: dict) -> tuple[str, dict]:
    """("shipped" | "modified" | "own" | "unknown", the changed fields) from the summary's protocol_origin."""
    origin = summary.get("protocol_origin")
    if not isinstance(origin, dict) or not isinstance(origin.get("shipped"), bool):
        return "unknown", {}
    if not origin["shipped"]:
        return "own", {}
    if origin.get("modified"):
        return "modified", origin.get("fields") or {}
    return "shipped", {}


def _measured_cell(folder: Path, s: dict, fig: dict) -> dict:
    """A measured cell: the figures its records give, and what produced them."""
    name = s.get("protocol", folder.parent.name)
    origin, changed = _origin(s)
    backbone = s.get("backbone") or {}
    versions = s.get("versions") or {}
    code = s.get("code") or {}
    return {
        "kind": "measured",
        "method": s.get("method", folder.name),
        "protocol": name,
        "column": name + "*" if origin == "modified" else name,
        "origin": origin,
        "modified_fields": changed,
        **fig,
        "protocol_sha256": s.get("protocol_sha256"),
        "episode_set_sha256": s.get("episode_set_sha256"),
        "data_sha256": s.get("data_sha256"),
        "backbone": backbone.get("name"),
        "backbone_weights_sha256": backbone.get("weights_sha256"),
        "backbone_code_sha256": code.get("backbone_code_sha256"),
        "checkpoint_sha256": s.get("checkpoint_sha256"),
        "records_sha256": s.get("records_sha256"),
        "records_verified": True,
        "harness_version": code.get("harness_version") or versions.get("harness"),
        "torch_version": versions.get("torch"),
        "device": s.get("device"),
        "folder": str(folder),
        "protocol_content": s.get("protocol_content"),
    }


def _set_key(m: dict) -> tuple:
    """What makes cells comparable: the episode set and the protocol outside its `methods` section (each
    method's settings are its own); the protocol hash when the summary has no content."""
    content = m["protocol_content"]
    protocol = json.dumps({k: v for k, v in content.items() if k != "methods"}, sort_keys=True) if isinstance(content, dict) else m["protocol_sha256"]
    return m["episode_set_sha256"], protocol


#: the value of a protocol field that one cell's protocol does not have at all
ABSENT = "(absent)"
#: what else can differ between the cells of a column, beside the episode set and protocol fields
PROVENANCE = (("harness version", "harness_version"), ("backbone code", "backbone_code_sha256"), ("data", "data_sha256"), ("backbone weights", "backbone_weights_sha256"))


def _spread(cells: list[dict], value) -> list[list]:
    """[[value, refs of the cells holding it], ...] when the cells hold more than one value, else []."""
    groups: dict[str, list] = {}
    for m in cells:
        v = value(m)
        groups.setdefault(json.dumps(v, sort_keys=True), [v, []])[1].append(m["ref"])
    return list(groups.values()) if len(groups) > 1 else []


def differences(cells: list[dict]) -> list[dict]:
    """What differs between the cells of one column: [{"what", "field", "values": [[value, [refs]], ...]}], `what`
    one of "episode set", "protocol" (one per dotted field), "harness version", "backbone code", "data",
    "backbone weights". A cell whose summary lacks a field (an older summary) is left out of that field's
    comparison: unknown is no difference."""
    leaves = {m["ref"]: leaf_fields(m["protocol_content"]) for m in cells if isinstance(m["protocol_content"], dict)}
    with_content = [m for m in cells if m["ref"] in leaves]
    known = lambda key: [m for m in cells if m[key] is not None]  # noqa: E731
    candidates = [("episode set", "episode_set_sha256", known("episode_set_sha256"), lambda m: m["episode_set_sha256"])]
    candidates += [("protocol", f, with_content, lambda m, f=f: leaves[m["ref"]].get(f, ABSENT)) for f in sorted(set().union(*leaves.values()))]
    candidates += [(what, key, known(key), lambda m, key=key: m[key]) for what, key in PROVENANCE]
    found = []
    for what, field, group, value in candidates:
        values = _spread(group, value)
        if values:
            found.append({"what": what, "field": field, "values": values})
    return found


def build(results: Path | str = "results", interval: str = DEFAULT_INTERVAL) -> dict:
    """The leaderboard as plain data: columns (a protocol, or `NAME*` for its modified runs), measured cells
    (each with `intervals` at every level), reported cells, unverified runs; `interval` is the level shown
    first (the papers' ± is always shown too)."""
    check_level(interval, "--interval")
    verified, unverified = collect(Path(results))
    measured = [_measured_cell(folder, s, fig) for folder, s, fig in verified]
    names = sorted({m["column"] for m in measured}, key=lambda c: (c.removesuffix("*"), c))  # NAME, then NAME*
    measured.sort(key=lambda m: (names.index(m["column"]), m["method"]))
    for i, m in enumerate(measured, 1):
        m["ref"] = i
    protocols, reported = [], []
    for name in names:
        cells = [m for m in measured if m["column"] == name]
        content = next((m["protocol_content"] for m in cells if isinstance(m["protocol_content"], dict)), {})
        col = {"name": name, "protocol": cells[0]["protocol"], "modified": name != cells[0]["protocol"], "dataset": (content.get("dataset") or {}).get("name"),
               "way": content.get("way"), "shot": content.get("shot")}
        # sets of comparable cells: a letter per distinct (episode set, protocol outside `methods`), most cells first
        keys = [_set_key(m) for m in cells]
        distinct = sorted(set(keys), key=lambda k: (-keys.count(k), keys.index(k)))
        letter = {k: SET_LETTERS[i % len(SET_LETTERS)] for i, k in enumerate(distinct)}
        col["mixed"] = len(distinct) > 1
        col["sets"] = {letter[k]: {"episode_set_sha256": k[0], "cells": [m["ref"] for m, kk in zip(cells, keys) if kk == k]} for k in distinct}
        for m, k in zip(cells, keys):
            m["episode_set"] = letter[k]
            m["mixed_episode_sets"] = col["mixed"]
            group = [c for c, kk in zip(cells, keys) if kk == k]
            m["best"] = len(group) > 1 and m["accuracy"] == max(c["accuracy"] for c in group)
        col["differences"] = differences(cells)
        col["origin_unknown"] = [m["ref"] for m in cells if m["origin"] == "unknown"]
        if all(m["origin"] == "shipped" for m in cells):  # published numbers only beside the benchmark's own protocol
            reported += [{"kind": "reported", "protocol": name, **r.to_dict()} for r in reported_for(name, content)]
        protocols.append(col)
    for m in measured:
        m.pop("protocol_content")
    failed = [{"kind": "unverified", "protocol": folder.parent.name, "method": folder.name, "folder": str(folder), "reason": why} for folder, why in unverified]
    return {"results": str(Path(results)), "interval": interval, "interval_legend": interval_legend(interval),
            "protocols": protocols, "measured": measured, "reported": reported, "unverified": failed}


# -------------------------------------------------------------------------------------------- rendering


def _methods(rows: list[dict]) -> list[str]:
    return sorted({r["method"] for r in rows})


def _headline(board: dict) -> str:
    return board.get("interval", DEFAULT_INTERVAL)


def _cell(m: dict, headline: str = DEFAULT_INTERVAL, marks: bool = True) -> str:
    """'62.31 (videos 60.92–63.70; episodes ± 0.43) * [2] (set b)': the mean first, then its intervals; `marks`:
    the best's `*` and the reference to its footer line (left out where the best is set in bold and the footer
    is kept out of the table)."""
    text = interval_cell(m["accuracy"], m["ci95"], m["intervals"], headline)
    if marks and m["best"]:
        text += " *"
    if marks:
        text += f" [{m['ref']}]"
    if m["mixed_episode_sets"]:
        text += f" (set {m['episode_set']})"
    return text


def _n(board: dict, column: str) -> str:
    ns = sorted({m["n_episodes"] for m in board["measured"] if m["column"] == column})
    return "n=" + "/".join(map(str, ns)) if ns else "n=?"


def _header(col: dict) -> str:
    way_shot = f"{col['way']}-way {col['shot']}-shot" if col["way"] and col["shot"] else ""
    return f"{col['name']} ({way_shot})" if way_shot else col["name"]


def measured_table(board: dict, cell=_cell) -> tuple[list[str], list[list[str]]]:
    """(header, rows): a row per method, a column per protocol; `cell(m, headline)` writes a measured cell, "-"
    stands where a method has none."""
    columns = ["method"] + [f"{_header(c)}, {_n(board, c['name'])}" for c in board["protocols"]]
    cells = {(m["method"], m["column"]): m for m in board["measured"]}
    rows = []
    for method in _methods(board["measured"]):
        rows.append([method] + [cell(cells[(method, c["name"])], _headline(board)) if (method, c["name"]) in cells else "-" for c in board["protocols"]])
    return columns, rows


#: the heading of the published numbers, wherever they are shown
REPORTED_TITLE = "Reported in papers (not measured here; other episodes, backbones and evaluation)"


def reported_table(board: dict) -> tuple[list[str], list[list[str]]]:
    names = list(dict.fromkeys(r["protocol"] for r in board["reported"]))
    columns = ["method"] + names + ["source"]
    rows = []
    for method in _methods(board["reported"]):
        mine = [r for r in board["reported"] if r["method"] == method]
        for source in dict.fromkeys(r["source"] for r in mine):
            cells = {r["protocol"]: r for r in mine if r["source"] == source}
            row = [method] + [f"{cells[p]['accuracy']:.1f}" if p in cells else "-" for p in names]
            notes = sorted({cells[p]["note"] for p in cells if cells[p]["note"]})
            rows.append(row + [source + (f" ({'; '.join(notes)})" if notes else "")])
    return columns, rows


def _refs(refs: list[int]) -> str:
    return ", ".join(f"[{r}]" for r in refs)


def _value(v, field: str = "") -> str:
    if v == ABSENT:
        return "absent"
    if isinstance(v, str) and field.endswith("sha256"):
        return _short(v)
    text = json.dumps(v, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _values(d: dict) -> str:
    return "; ".join(f"{_value(v, d['field'])}: {_refs(refs)}" for v, refs in d["values"])


def _column_notes(col: dict, board: dict) -> list[str]:
    """The footnote of a `NAME*` column and the warnings of a column whose cells differ."""
    lines = []
    name, diffs = col["name"], col["differences"]
    if col["modified"]:
        cells = [m for m in board["measured"] if m["column"] == name]
        changes: dict[str, list[int]] = {}
        for m in cells:
            listed = "; ".join(f"{f}: shipped {_value(v.get('shipped'))}, run {_value(v.get('run'))}" for f, v in sorted(m["modified_fields"].items()))
            changes.setdefault(listed or "(fields not recorded)", []).append(m["ref"])
        lines.append(f"{name} = protocol {col['protocol']} changed from the shipped protocols/{col['protocol']}.yaml, so not that benchmark's protocol, "
                     f"and no published numbers are shown beside it: " + " | ".join(f"{_refs(refs)} {listed}" for listed, refs in changes.items()))
    episode_sets = [d for d in diffs if d["what"] == "episode set"]
    if episode_sets:
        lines.append(f"WARNING: protocol {name} holds results on {len(episode_sets[0]['values'])} different episode sets ({_values(episode_sets[0])})")
    fields = [d for d in diffs if d["what"] == "protocol"]
    if fields:
        lines.append(f"WARNING: the cells of {name} ran with different protocol fields: " + "; ".join(f"{d['field']} ({_values(d)})" for d in fields))
    other = [d for d in diffs if d["what"] not in ("episode set", "protocol")]
    if other:
        lines.append(f"WARNING: the cells of {name} differ in " + "; ".join(f"{d['what']} ({_values(d)})" for d in other))
    if col["mixed"]:
        sets = "; ".join(f"set {k}: {_refs(v['cells'])}" for k, v in col["sets"].items())
        lines.append(f"cells of {name} in different sets ({sets}) differ in their episode set or in protocol fields outside `methods`: "
                     f"they are not comparable, and the best is marked within each set")
    return lines


def footer(board: dict, legend: bool = True, best: str = "*") -> list[str]:
    """What the intervals cover (unless `legend` is False: a table caption says it), how the best is marked
    (`best`), one line per measured cell (what produced it), then the notes and flags that apply."""
    lines = [interval_legend(_headline(board))] if legend else []
    lines += [
        f"{best} best mean accuracy among comparable cells of a column (use `bench.py compare` for significance); "
        "every number is recomputed from its verified records",
    ]
    for m in board["measured"]:
        lines.append(
            f"[{m['ref']}] {m['method']} on {m['column']}: n={m['n_episodes']}, protocol {_short(m['protocol_sha256'])}, "
            f"episode set {_short(m['episode_set_sha256'])}, backbone {m['backbone']} weights {_short(m['backbone_weights_sha256'])}, "
            f"checkpoint {_short(m['checkpoint_sha256'])}, records {_short(m['records_sha256'])}, data {_short(m['data_sha256'])}, "
            f"harness {m['harness_version'] or '?'}, torch {m['torch_version'] or '?'}"
        )
    for col in board["protocols"]:
        lines += _column_notes(col, board)
    unknown = [r for col in board["protocols"] for r in col["origin_unknown"]]
    if unknown:
        lines.append(f"{_refs(unknown)}: origin unknown (the summary predates protocol_origin): whether the protocol ran as shipped is not known, "
                     f"so no published numbers are shown beside them")
    for u in board["unverified"]:
        lines.append(f"NOT SHOWN (fails verification): {u['folder']}: {u['reason']}; score it again with --recompute, never edit result files")
    if board["reported"]:
        lines.append("Reported numbers come from the papers named, with their own episodes, backbones and evaluation; they were not "
                     "measured here and are not ranked against measured ones.")
    return lines


def to_rich(board: dict):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts = []
    columns, rows = measured_table(board)
    table = Table(title=f"measured here: accuracy (%) with 95% intervals from {board['results']}", caption=interval_legend(_headline(board)), caption_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right", overflow="fold")  # wrapped, never cut
    for row in rows:
        table.add_row(*row)
    parts.append(table)
    if board["reported"]:
        columns, rows = reported_table(board)
        rep = Table(title="reported in papers (NOT measured here; other episodes, backbones and evaluation)")
        for i, c in enumerate(columns):
            rep.add_column(c, justify="right" if 0 < i < len(columns) - 1 else "left", overflow="fold")
        for row in rows:
            rep.add_row(*row)
        parts.append(rep)
    parts.append(Text("\n".join(footer(board, legend=False))))
    return Group(*parts)


def _md_table(columns: list[str], rows: list[list[str]], text_columns: tuple[int, ...] = (0,)) -> list[str]:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join("---" if i in text_columns else "---:" for i in range(len(columns))) + "|"
    return [line(columns), rule, *map(line, rows)]


def to_markdown(board: dict) -> str:
    out = [f"## Measured here: accuracy (%) with 95% intervals from `{board['results']}`", ""]
    out += _md_table(*measured_table(board))
    if board["reported"]:
        out += ["", f"## {REPORTED_TITLE}", ""]
        columns, rows = reported_table(board)
        out += _md_table(columns, rows, text_columns=(0, len(columns) - 1))
    out += [""] + [f"- {chr(92) + line if line.startswith('*') else line}" for line in footer(board)]  # "- *" would nest a list
    return "\n".join(out) + "\n"


#: the low and high of each level's 95% interval, in csv columns
INTERVAL_FIELDS = tuple(f"{level}_{end}" for level in LEVELS for end in ("low", "high"))

CSV_FIELDS = (
    "kind", "method", "protocol", "accuracy", "ci95", "t_low", "t_high", *INTERVAL_FIELDS, "headline_interval", "n_episodes", "best", "episode_set", "mixed_episode_sets",
    "protocol_sha256", "episode_set_sha256", "backbone", "backbone_weights_sha256", "checkpoint_sha256", "records_sha256",
    "records_verified", "harness_version", "torch_version", "dataset", "split", "way", "shot", "source", "note",
    "column", "origin", "modified_fields", "data_sha256", "backbone_code_sha256", "folder",
)


def to_csv(board: dict) -> str:
    """One row per cell; `kind` says measured, reported or unverified (no figures; `note` says why), and every
    measured row carries its provenance (`modified_fields` as JSON: {field: {"shipped", "run"}}) and the 95%
    interval of every level (`episodes_low` ... `classes_high`; `headline_interval` the one tables show first)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for m in board["measured"]:
        t = m["t_interval95"]
        levels = {f"{level}_{end}": m["intervals"][level][end] for level in LEVELS for end in ("low", "high")}
        writer.writerow({**m, **levels, "headline_interval": _headline(board), "t_low": t[0], "t_high": t[1], "modified_fields": json.dumps(m["modified_fields"], sort_keys=True) if m["modified_fields"] else ""})
    for r in board["reported"]:
        writer.writerow(r)
    for u in board["unverified"]:
        writer.writerow({**u, "note": u["reason"]})
    return buf.getvalue()


def to_json(board: dict) -> str:
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------- pictures


def _plot_rows(board: dict) -> list[tuple[str, list[dict]]]:
    """(protocol, rows): measured rows {label, accuracy, episodes: (low, high), second: (low, high),
    reported: False} first, then reported rows {label, accuracy, reported: True} (no interval)."""
    second = second_level(_headline(board))
    panels = []
    for col in board["protocols"]:
        rows = []
        for m in board["measured"]:
            if m["column"] == col["name"]:
                half = m["ci95"] or 0.0
                label = m["method"] + (f" (set {m['episode_set']})" if m["mixed_episode_sets"] else "")
                other = m["intervals"][second]
                rows.append({"label": label, "accuracy": m["accuracy"], "episodes": (m["accuracy"] - half, m["accuracy"] + half),
                             "second": (other["low"], other["high"]), "reported": False})
        for r in board["reported"]:
            if r["protocol"] == col["name"]:
                rows.append({"label": f"{r['method']} (reported)", "accuracy": r["accuracy"], "reported": True})
        panels.append((f"{_header(col)}, {_n(board, col['name'])}", rows))
    return panels


def _axis(rows: list[dict]) -> tuple[float, float, float]:
    """(low, high, tick step) of a panel's accuracy axis: every mean and interval of the panel with a margin,
    on round ticks within [0, 100], so that intervals of a few tenths of a point are drawn wide enough to see."""
    values = [v for r in rows for v in ((r["accuracy"],) if r["reported"] else (*r["episodes"], *r["second"], r["accuracy"]))]
    if not values:
        return 0.0, 100.0, 10.0
    lo, hi = min(values), max(values)
    pad = max(0.5, 0.08 * (hi - lo))
    lo, hi = max(0.0, lo - pad), min(100.0, hi + pad)
    step = next(s for s in (0.2, 0.5, 1, 2, 5, 10, 20, 25) if (hi - lo) / s <= 8)
    return max(0.0, math.floor(lo / step) * step), min(100.0, math.ceil(hi / step) * step), float(step)


def _legend(board: dict) -> list[str]:
    """What the picture's marks mean, in words: one line each."""
    headline, second = _headline(board), second_level(_headline(board))
    return [f"accuracy (%), 95% intervals; axes zoomed to each panel's numbers; shown first in tables: {headline} (--interval)",
            f"{second}: {SAYS[second]}",
            f"± episodes: {SAYS['episodes']}",
            "mean", "reported in a paper, not measured here (no interval)"]


#: the picture's marks: the second level's thick light bar, the papers' thin dark bar with end caps, a small dot
SECOND_BAR = {"colour": "#9ecae1", "width": 10}
EPISODES_BAR = {"colour": "#08306b", "width": 2, "cap": 10}
DOT_R = 2.5


def svg(board: dict) -> str:
    """The picture as SVG text, drawn by hand: a panel per protocol (its own axis), per method a thick light bar
    for the `videos` interval (or `classes`, with --interval classes), a thin dark bar with end caps for the
    papers' ± and a small dot for the mean; reported numbers as hollow diamonds without an interval; a legend."""
    left, right, width, row_h, head_h, tick_h, top = 200, 50, 760, 22, 28, 26, 110
    plot_w = width - left - right
    panels = _plot_rows(board)
    height = top + sum(head_h + row_h * max(1, len(rows)) + tick_h for _, rows in panels) + 30
    dark, light = EPISODES_BAR["colour"], SECOND_BAR["colour"]
    legend, second = _legend(board), second_level(_headline(board))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="8" y="20" font-size="13">{escape(legend[0])}</text>',
           f'<line class="legend {second}" x1="14" y1="40" x2="54" y2="40" stroke="{light}" stroke-width="{SECOND_BAR["width"]}"/>',
           f'<text x="64" y="44">{escape(legend[1])}</text>',
           f'<line class="legend episodes" x1="14" y1="60" x2="54" y2="60" stroke="{dark}" stroke-width="{EPISODES_BAR["width"]}"/>',
           f'<line x1="14" y1="55" x2="14" y2="65" stroke="{dark}" stroke-width="1.5"/><line x1="54" y1="55" x2="54" y2="65" stroke="{dark}" stroke-width="1.5"/>',
           f'<text x="64" y="64">{escape(legend[2])}</text>',
           f'<circle class="legend mean" cx="34" cy="80" r="{DOT_R}" fill="white" stroke="{dark}" stroke-width="1.5"/>',
           f'<text x="64" y="84">{escape(legend[3])}</text>',
           '<polygon class="legend reported" points="234,75 239,80 234,85 229,80" fill="white" stroke="#888"/>',
           f'<text x="248" y="84">{escape(legend[4])}</text>']
    y = top
    for title, rows in panels:
        lo, hi, step = _axis(rows)

        def x(v: float, lo=lo, hi=hi) -> float:
            return left + plot_w * (min(max(v, lo), hi) - lo) / (hi - lo)

        ticks = [lo + k * step for k in range(int(round((hi - lo) / step)) + 1)]
        out.append(f'<text x="8" y="{y + 18}" font-weight="bold">{escape(title)}</text>')
        y += head_h
        body = row_h * max(1, len(rows))
        for tick in ticks:
            out.append(f'<line x1="{x(tick):.1f}" y1="{y}" x2="{x(tick):.1f}" y2="{y + body}" stroke="#ddd"/>')
        for i, r in enumerate(rows):
            cy = y + row_h * i + row_h / 2
            colour = "#888" if r["reported"] else dark
            out.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end" fill="{colour}">{escape(r["label"])}</text>')
            if r["reported"]:
                cx = x(r["accuracy"])
                out.append(f'<polygon class="reported" points="{cx:.1f},{cy - 5:.1f} {cx + 5:.1f},{cy:.1f} {cx:.1f},{cy + 5:.1f} {cx - 5:.1f},{cy:.1f}" fill="white" stroke="{colour}"/>')
            else:
                (e_lo, e_hi), (s_lo, s_hi) = r["episodes"], r["second"]
                out.append(f'<line class="interval {second}" x1="{x(s_lo):.1f}" y1="{cy:.1f}" x2="{x(s_hi):.1f}" y2="{cy:.1f}" stroke="{light}" '
                           f'stroke-width="{SECOND_BAR["width"]}"><title>{second} {s_lo:.2f}–{s_hi:.2f}</title></line>')
                out.append(f'<line class="interval episodes" x1="{x(e_lo):.1f}" y1="{cy:.1f}" x2="{x(e_hi):.1f}" y2="{cy:.1f}" stroke="{dark}" '
                           f'stroke-width="{EPISODES_BAR["width"]}"><title>± episodes {e_lo:.2f}–{e_hi:.2f}</title></line>')
                cap = EPISODES_BAR["cap"] / 2
                for end in (e_lo, e_hi):
                    out.append(f'<line x1="{x(end):.1f}" y1="{cy - cap:.1f}" x2="{x(end):.1f}" y2="{cy + cap:.1f}" stroke="{dark}" stroke-width="1.5"/>')
                out.append(f'<circle class="mean" cx="{x(r["accuracy"]):.1f}" cy="{cy:.1f}" r="{DOT_R}" fill="white" stroke="{dark}" stroke-width="1.5"/>')
            out.append(f'<text x="{width - 4}" y="{cy + 4:.1f}" text-anchor="end" fill="{colour}" font-size="10">{r["accuracy"]:.2f}</text>')
        y += body
        for tick in ticks:
            out.append(f'<text x="{x(tick):.1f}" y="{y + 14}" text-anchor="middle" font-size="10">{tick:g}</text>')
        y += tick_h
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{y + 10}" text-anchor="middle">accuracy (%)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _matplotlib():
    """matplotlib's Figure and Agg canvas (no pyplot: no global state), or an error that says how to get them."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise HarnessError("a PNG picture needs matplotlib, which is not installed", fix="pip install matplotlib, or ask for an SVG (--plot FILE.svg), which needs nothing") from None
    return Figure, FigureCanvasAgg


def png(board: dict) -> bytes:
    """The picture as PNG bytes, drawn with matplotlib (imported here, so nothing else needs it): the marks of
    the SVG (`svg`), a panel per protocol on its own axis."""
    Figure, FigureCanvasAgg = _matplotlib()
    panels = _plot_rows(board)
    legend = _legend(board)
    heights = [max(1, len(rows)) + 1 for _, rows in panels]
    fig = Figure(figsize=(9, 0.35 * sum(heights) + 2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    dark, light = EPISODES_BAR["colour"], SECOND_BAR["colour"]
    handles = {}
    for ax, (title, rows) in zip(axes, panels):
        for i, r in enumerate(rows):
            if r["reported"]:
                handles["reported"] = ax.plot(r["accuracy"], i, marker="D", mfc="white", mec="grey", ls="none")[0]
                continue
            handles["second"] = ax.hlines(i, *r["second"], colors=light, linewidth=SECOND_BAR["width"])
            e_lo, e_hi = r["episodes"]
            handles["episodes"] = ax.errorbar(r["accuracy"], i, xerr=[[r["accuracy"] - e_lo], [e_hi - r["accuracy"]]], fmt="none", ecolor=dark,
                                              elinewidth=EPISODES_BAR["width"], capsize=5)
            handles["mean"] = ax.plot(r["accuracy"], i, marker="o", ms=2 * DOT_R, mfc="white", mec=dark, ls="none")[0]
        lo, hi, _ = _axis(rows)
        ax.set_xlim(lo, hi)
        ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
        ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)
        ax.set_title(title, loc="left", fontsize=10)
        ax.grid(axis="x", color="#ddd")
    names = {"second": legend[1], "episodes": legend[2], "mean": legend[3], "reported": legend[4]}
    kept = [k for k in names if k in handles]
    h = fig.get_figheight()  # inches: the title, then one legend line each, above the panels
    fig.suptitle(legend[0], fontsize=9, x=0.01, y=1 - 0.08 / h, ha="left", va="top")
    fig.legend([handles[k] for k in kept], [names[k] for k in kept], loc="upper left", bbox_to_anchor=(0.01, 1 - 0.3 / h), fontsize=8, frameon=False)
    axes[-1].set_xlabel("accuracy (%)")
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.3 + 0.17 * len(kept)) / h))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def plot(board: dict, path: Path) -> None:
    """Write the picture to `path`, SVG or PNG by its suffix (atomically)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        atomic_write_text(path, svg(board))
    elif suffix == ".png":
        atomic_write_bytes(path, png(board))
    else:
        raise HarnessError(f"cannot draw a picture as '{path.suffix or path.name}'", fix="name a .svg file (needs nothing) or a .png file (needs matplotlib)")


def render(board: dict, fmt: str, picture: bool = False) -> str:
    """The leaderboard as text in one of FORMATS (rich as plain text, for a file); `picture`: the html page
    holds the SVG picture too."""
    if fmt in ("latex", "html"):
        from harness import publish

        return publish.to_latex(board) if fmt == "latex" else publish.to_html(board, picture)
    if fmt == "md":
        return to_markdown(board)
    if fmt == "csv":
        return to_csv(board)
    if fmt == "json":
        return to_json(board)
    if fmt == "rich":
        from rich.console import Console

        rich = to_rich(board)
        width = max(100, needed_width(*rich.renderables[:-1]))  # the tables unwrapped; the footer wraps at their width
        console = Console(record=True, width=width, file=io.StringIO())
        console.print(rich)
        return console.export_text()
    raise HarnessError(f"unknown leaderboard format '{fmt}'", fix=f"use one of: {', '.join(FORMATS)}")


def cmd_leaderboard(args) -> int:
    """`bench.py leaderboard [--results DIR] [--interval episodes|videos|classes] [--format rich|md|csv|json|latex|html]
    [--out FILE] [--plot FILE.png|svg]` (html with --plot holds the picture too, as SVG)."""
    fmt = getattr(args, "format", "rich") or "rich"
    interval = check_level(getattr(args, "interval", None) or DEFAULT_INTERVAL, "--interval")
    if fmt not in FORMATS:
        raise HarnessError(f"unknown leaderboard format '{fmt}'", fix=f"use one of: {', '.join(FORMATS)}")
    if args.plot and Path(args.plot).suffix.lower() not in (".svg", ".png"):
        raise HarnessError(f"cannot draw a picture as '{args.plot}'", fix="name a .svg file (needs nothing) or a .png file (needs matplotlib)")
    if args.plot and Path(args.plot).suffix.lower() == ".png":
        _matplotlib()  # before any output: say what is missing first
    board = build(Path(args.results), interval)
    if args.out:
        atomic_write_text(Path(args.out), render(board, fmt, picture=bool(args.plot)))
        print(f"leaderboard written to {args.out}")
    elif fmt == "rich":
        rich = to_rich(board)
        wide_console(*rich.renderables[:-1]).print(rich)
    else:
        print(render(board, fmt, picture=bool(args.plot)), end="")
    if args.plot:
        plot(board, Path(args.plot))
        print(f"picture written to {args.plot}")
    return 0
