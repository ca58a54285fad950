"""Comparing methods on the SAME episodes: paired differences, paired tests, one sentence of verdict.

    fsv-bench compare protonet trx otam --protocol synthetic-5w1s [--alpha 0.05] [--json FILE]

Only verified runs are compared (harness.verify: records with the SHA-256 their summary names, well formed,
and giving the summary's figures); any other is refused with the file and field that fail. Methods are
compared only when their runs share the episode set (its hash in the summaries, and the records
line up episode by episode); otherwise the comparison is refused. For two methods: the mean paired
difference's interval and p-value at each level of harness.uncertainty (episodes: this pool of test videos,
paired t-test; videos: new videos of the same classes, and classes: new classes, both by the bootstrap), plus
a Wilcoxon signed-rank test and an exact McNemar test on per-query correctness (both at the episodes level).
For more: every pair, Holm-corrected at every level, and a ranking that says which differences are
significant. The verdict, Holm's correction and the ranking rest on ONE level, `--level` (videos by default:
a verdict about a method should hold for new videos, not only for the pool it was measured on); the table
shows what every level says, and the verdict names the levels that disagree with it.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from harness import stats, uncertainty
from harness.errors import HarnessError
from harness.files import atomic_write_json
from harness.names import check_name
from harness.uncertainty import DEFAULT_RESAMPLES, LEVELS
from harness.verify import load_verified


# ------------------------------------------------------------------------------------------ loading runs


@dataclass
class Run:
    """One finished run: its summary and its per-episode records."""

    method: str
    folder: Path
    summary: dict
    records: list[dict]

    @cached_property
    def per_episode(self) -> np.ndarray:
        """Per-episode accuracy in percent [E]."""
        return stats.episode_accuracy(self.records)

    @cached_property
    def correct(self) -> np.ndarray:
        """Per-query correctness [E, Q]."""
        return stats.query_outcomes(self.records)


def load_run(folder: Path) -> Run:
    """The run in <folder>: summary.json and episodes.jsonl read under the folder's shared lock and verified
    (harness.verify: the records' SHA-256, schema and figures); a run that fails is refused, naming the file."""
    summary, records, _ = load_verified(folder)
    return Run(method=summary.get("method", Path(folder).name), folder=Path(folder), summary=summary, records=records)


def protocol_for_results(name_or_path: str) -> tuple[str, str | None, str]:
    """(results folder name, expected protocol SHA-256 or None, how it was named).

    A path to a protocol file is read for its name and hash; anything else is taken as the protocol's name
    (the folder under the results directory), as `run` wrote it."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        from harness.protocol import load_protocol

        p = load_protocol(path)
        return p.name, p.sha256, str(path)
    check_name(name_or_path, f"protocol '{name_or_path}'", where="--protocol", fix="pass the protocol's name (its folder under --results) or its .yaml file")
    return name_or_path, None, name_or_path


def load_runs(results: Path, protocol: str, methods: list[str]) -> list[Run]:
    """The runs of `methods` on `protocol` under `results`, checked to share one episode set."""
    name, expected_sha, shown = protocol_for_results(protocol)
    if len(set(methods)) != len(methods):
        raise HarnessError(f"a method is named twice: {' '.join(methods)}", fix="name each method once")
    for m in methods:
        check_name(m, f"method '{m}'", fix="pass the names of methods with results (their folders under --results/PROTOCOL)")
    root = Path(results) / name
    if not root.is_dir():
        raise HarnessError(f"no results for protocol '{name}' in {Path(results)}", fix=f"evaluate first: fsv-bench run --protocol {shown} --method M (or pass --results DIR)")
    runs = []
    for m in methods:
        if not (root / m).is_dir():
            found = ", ".join(sorted(p.name for p in root.iterdir() if (p / "summary.json").is_file())) or "(none)"
            raise HarnessError(f"no run of method '{m}' on protocol '{name}' in {root}", fix=f"evaluate it: fsv-bench run --protocol {shown} --method {m} (methods with results there: {found})")
        runs.append(load_run(root / m))
    if expected_sha:
        other = [r for r in runs if r.summary.get("protocol_sha256") != expected_sha]
        if other:
            raise HarnessError(
                f"the results of {', '.join(r.method for r in other)} were made with another content of protocol '{name}' than {shown} holds now",
                fix=f"compare them as they are by passing the name ({name}) instead of the file, or evaluate again",
            )
    check_same_episodes(runs)
    return runs


def check_same_episodes(runs: list[Run]) -> None:
    """Refuse unless every run holds the same episodes: equal episode-set hashes, records that line up."""
    sets = {r.method: r.summary.get("episode_set_sha256") for r in runs}
    if len(set(sets.values())) != 1:
        listing = "; ".join(f"{m}: {(h or 'none')[:12]}" for m, h in sets.items())
        raise HarnessError(
            f"these runs were evaluated on different episode sets ({listing}), so a paired comparison is impossible",
            fix="evaluate every method with the same protocol and --episodes, then compare again",
        )
    first = runs[0]
    for run in runs[1:]:
        if len(run.records) != len(first.records):
            raise HarnessError(f"{first.method} has {len(first.records)} episodes and {run.method} {len(run.records)}", fix="evaluate both with the same --episodes")
        for a, b in zip(first.records, run.records):
            for key in ("episode", "classes", "support", "query", "query_labels"):
                if a[key] != b[key]:
                    raise HarnessError(
                        f"episode {a['episode']}: field '{key}' differs between {first.method} and {run.method}, although their summaries name the same episode set",
                        where=str(run.folder / "episodes.jsonl"),
                        fix="the records were changed or mixed up; evaluate the methods again",
                    )


# ------------------------------------------------------------------------------------------- statistics


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def compare_pair(a: Run, b: Run, alpha: float = 0.05, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Every paired statistic of A - B (percentage points) on their shared episodes: the difference's
    interval and p-value at each level (harness.uncertainty), and the episode-level second opinions."""
    xa, xb = a.per_episode, b.per_episode
    d = xa - xb
    confidence = 1 - alpha
    outcome_diff = a.correct - b.correct  # [E, Q] in {-1, 0, 1}
    layout = stats.query_layout(a.records)
    return {
        "a": a.method,
        "b": b.method,
        "mean_difference": float(d.mean()),
        "levels": {level: uncertainty.level_test(a.records, outcome_diff, level, confidence, n_resamples, seed, layout=layout) for level in LEVELS},
        "t_interval": stats.student_t_interval(d, confidence),
        "bootstrap": stats.bootstrap_interval(d, confidence, n_resamples, seed),
        "paired_t": stats.paired_t_test(xa, xb),
        "wilcoxon": stats.wilcoxon_test(xa, xb),
        "mcnemar": stats.mcnemar_exact(a.correct, b.correct),
        "a_better_episodes": int(np.sum(d > 0)),
        "b_better_episodes": int(np.sum(d < 0)),
        "tied_episodes": int(np.sum(d == 0)),
    }


def _level_p(pair: dict, level: str) -> float:
    """The p-value a level's verdict uses: Holm-adjusted when the comparison has several pairs."""
    test = pair["levels"][level]
    return test["p"] if test.get("p_holm") is None else test["p_holm"]


def _second_opinions(pair: dict, alpha: float, significant: bool, level: str) -> str:
    """What disagrees with the verdict, as the end of its sentence ("" when nothing does): the other levels,
    and at the episodes level the Wilcoxon and exact McNemar tests (which share the episodes' unit)."""
    against = []
    for other in LEVELS:
        if other != level and (_level_p(pair, other) < alpha) != significant:
            adjusted = pair["levels"][other].get("p_holm") is not None
            against.append(f"the {other} level, {uncertainty.CLAIMS[other]} ({'Holm-adjusted ' if adjusted else ''}{_p(_level_p(pair, other))})")
    if level == "episodes":
        for key, name in {"wilcoxon": "the Wilcoxon signed-rank test", "mcnemar": "the exact McNemar test"}.items():
            adjusted = pair[key].get("p_holm")
            p = pair[key]["p"] if adjusted is None else adjusted
            if (p < alpha) != significant:
                against.append(f"{name} ({'Holm-adjusted ' if adjusted is not None else ''}{_p(p)})")
    if not against:
        return ""
    plural = len(against) > 1
    if significant:
        return "; " + " and ".join(against) + (" do not confirm it" if plural else " does not confirm it")
    return "; " + " and ".join(against) + (" find one" if plural else " finds one")


def verdict(pair: dict, alpha: float, level: str = "videos") -> str:
    """One plain sentence on the pair at `alpha`, at `level`: its interval and (Holm-adjusted) p-value; the
    levels (and, at the episodes level, the tests) that disagree are named at its end."""
    a, b, diff = pair["a"], pair["b"], pair["mean_difference"]
    test = pair["levels"][level]
    ci, conf = test, f"{100 * (1 - alpha):g}%"
    p = _level_p(pair, level)
    how = f"{test['test']} {_p(test['p'])}" + (f", Holm-adjusted {_p(p)}" if test.get("p_holm") is not None else "")
    claim = uncertainty.CLAIMS[level]
    if p < alpha and diff != 0:
        better, worse = (a, b) if diff > 0 else (b, a)
        lo, hi = (ci["low"], ci["high"]) if diff > 0 else (-ci["high"], -ci["low"])
        return (f"{better} is better than {worse} by {abs(diff):.1f} points at the {level} level, {claim} "
                f"({conf} CI {lo:.1f} to {hi:.1f}; {how}){_second_opinions(pair, alpha, True, level)}.")
    return (f"No significant difference between {a} and {b} at alpha {alpha:g} at the {level} level, {claim} "
            f"({a} - {b} = {diff:+.1f} points, {conf} CI {ci['low']:.1f} to {ci['high']:.1f}; {how}){_second_opinions(pair, alpha, False, level)}.")


def _ranking(methods: list[str], accuracy: dict[str, float], significant: dict[tuple[str, str], int]) -> list[dict]:
    """Methods by mean accuracy, each with whom it beats significantly and the ranks it could hold."""
    order = sorted(methods, key=lambda m: -accuracy[m])
    rows = []
    for i, m in enumerate(order):
        beats = [o for o in order if significant.get((m, o)) == 1]
        beaten_by = [o for o in order if significant.get((o, m)) == 1]
        tied = [o for o in order if o != m and o not in beats and o not in beaten_by]
        rows.append(
            {
                "rank": i + 1,
                "method": m,
                "accuracy": accuracy[m],
                "significantly_better_than": beats,
                "significantly_worse_than": beaten_by,
                "not_distinguished_from": tied,
                # every method significantly above it must rank higher, every one below it lower
                "possible_ranks": [len(beaten_by) + 1, len(methods) - len(beats)],
            }
        )
    return rows


def compare_runs(runs: list[Run], alpha: float = 0.05, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: str = "videos") -> dict:
    """The comparison of already loaded runs (they must share the episode set) as plain data; the verdicts,
    Holm's correction and the ranking rest on `level` (harness.uncertainty.LEVELS)."""
    if len(runs) < 2:
        raise HarnessError("a comparison needs at least two methods", fix="name two or more methods: fsv-bench compare A B --protocol P")
    if not 0 < alpha < 1:
        raise HarnessError(f"alpha must be between 0 and 1, got {alpha}", fix="use e.g. --alpha 0.05")
    if n_resamples < 100:
        raise HarnessError(f"--resamples must be at least 100, got {n_resamples}", fix="use e.g. --resamples 9999 (the default)")
    uncertainty.check_level(level)
    check_same_episodes(runs)
    first = runs[0]
    method_rows = []
    for r in runs:
        method_rows.append(
            {
                "method": r.method,
                "accuracy": float(r.per_episode.mean()),
                "intervals": uncertainty.level_intervals(r.records, 1 - alpha, n_resamples, seed),
                "records_sha256": r.summary.get("records_sha256"),
                "checkpoint_sha256": r.summary.get("checkpoint_sha256"),
                "method_config": r.summary.get("method_config"),
                "backbone": r.summary.get("backbone", {}).get("name"),
                "backbone_weights_sha256": r.summary.get("backbone", {}).get("weights_sha256"),
            }
        )
    pairs = [compare_pair(a, b, alpha, n_resamples, seed) for a, b in itertools.combinations(runs, 2)]
    multiple = len(pairs) > 1
    for lvl in LEVELS:  # every level Holm-corrected, so the table's other levels are judged on the same footing
        for pair, p in zip(pairs, stats.holm([p["levels"][lvl]["p"] for p in pairs])):
            pair["levels"][lvl]["p_holm"] = float(p) if multiple else None
    for key in ("wilcoxon", "mcnemar"):
        for pair, p in zip(pairs, stats.holm([p[key]["p"] for p in pairs])):
            pair[key]["p_holm"] = float(p) if multiple else None
    significant: dict[tuple[str, str], int] = {}
    for pair in pairs:
        pair["p_holm"] = pair["levels"][level]["p_holm"]
        for lvl in LEVELS:
            pair["levels"][lvl]["significant"] = bool(_level_p(pair, lvl) < alpha and pair["mean_difference"] != 0)
        pair["significant"] = pair["levels"][level]["significant"]
        pair["verdict"] = verdict(pair, alpha, level)
        if pair["significant"]:
            winner, loser = (pair["a"], pair["b"]) if pair["mean_difference"] > 0 else (pair["b"], pair["a"])
            significant[(winner, loser)] = 1
    accuracy = {m["method"]: m["accuracy"] for m in method_rows}
    result = {
        "protocol": first.summary.get("protocol"),
        "protocol_sha256": first.summary.get("protocol_sha256"),
        "episode_set_sha256": first.summary.get("episode_set_sha256"),
        "n_episodes": len(first.records),
        "n_queries": int(first.correct.size),
        "alpha": alpha,
        "n_resamples": n_resamples,
        "seed": seed,
        "level": level,
        "level_claim": uncertainty.CLAIMS[level],
        "primary_test": pairs[0]["levels"][level]["test"] + (", Holm-corrected over all pairs" if multiple else ""),
        "methods": method_rows,
        "pairs": pairs,
        "ranking": _ranking([r.method for r in runs], accuracy, significant),
        "verdict": [p["verdict"] for p in pairs],
    }
    return _finite(result)


def compare(methods: list[str], protocol: str, results: Path | str = "results", alpha: float = 0.05, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
            level: str = "videos") -> dict:
    """Load the runs of `methods` on `protocol` (a name, or a protocol file) from `results` and compare them."""
    uncertainty.check_level(level)
    return compare_runs(load_runs(Path(results), protocol, list(methods)), alpha, n_resamples, seed, level)


def _finite(x):
    """JSON has no NaN or infinity: such values become None (a zero-variance test statistic, for one)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ------------------------------------------------------------------------------------------------ output


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _fmt_interval(i: dict) -> str:
    return f"{i['low']:.2f} to {i['high']:.2f}"


def _fmt_ci(i: dict) -> str:
    return f"{i['low']:+.2f} to {i['high']:+.2f}"


def _table(**kwargs):
    """A rich table whose cells fold instead of being cut: a number is never shown as '+24…'."""
    from rich.table import Table

    return Table(**kwargs)


def _column(table, name: str, left: bool = False) -> None:
    table.add_column(name, justify="left" if left else "right", overflow="fold")


def render(result: dict):
    """Rich renderables of a comparison: methods at each level, pairwise differences at each level, ranking
    (more than two), verdicts."""
    from rich.console import Group
    from rich.text import Text

    conf = f"{100 * (1 - result['alpha']):g}%"
    level = result["level"]
    claims = "; ".join(f"{lvl}: {uncertainty.CLAIMS[lvl]}" for lvl in LEVELS)
    methods = _table(
        title=f"{result['protocol']}: {result['n_episodes']} shared episodes ({result['episode_set_sha256'][:12]}...)",
        caption=f"accuracy in %; {conf} intervals for {claims}. The episodes ± is the papers' (z x population std / sqrt(n))",
    )
    _column(methods, "method", left=True)
    _column(methods, "accuracy")
    _column(methods, "± episodes")
    for lvl in ("videos", "classes"):
        _column(methods, f"{conf} {lvl}")
    for m in result["methods"]:
        i = m["intervals"]
        methods.add_row(m["method"], f"{m['accuracy']:.2f}", f"{i['episodes']['half_width']:.2f}", _fmt_interval(i["videos"]), _fmt_interval(i["classes"]))

    multiple = len(result["pairs"]) > 1
    holm = "Holm-adjusted " if multiple else ""
    pairs = _table(
        title=f"paired differences A - B (percentage points); verdicts at the {level} level",
        caption=f"{conf} CI and {holm}p per level (episodes: paired t-test; videos, classes: bootstrap); W: Wilcoxon signed-rank {holm}p and "
        f"McNemar: exact, on per-query correctness (queries only A / only B got right, {holm}p), both at the episodes level",
    )
    for col in ("A", "B"):
        _column(pairs, col, left=True)
    _column(pairs, "A - B")
    for lvl in LEVELS:
        _column(pairs, f"{lvl} CI")
        _column(pairs, f"{lvl} p")
    for col in ("W p", "McNemar", f"significant ({level})"):
        _column(pairs, col)
    for p in result["pairs"]:
        mc = p["mcnemar"]
        row = [p["a"], p["b"], f"{p['mean_difference']:+.2f}"]
        for lvl in LEVELS:
            row += [_fmt_ci(p["levels"][lvl]), _fmt_p(_level_p(p, lvl))]
        w = p["wilcoxon"]["p"] if p["wilcoxon"].get("p_holm") is None else p["wilcoxon"]["p_holm"]
        m = mc["p"] if mc.get("p_holm") is None else mc["p_holm"]
        row += [_fmt_p(w), f"{mc['only_a_correct']}/{mc['only_b_correct']} {_fmt_p(m)}", "yes" if p["significant"] else "no"]
        pairs.add_row(*row)
    parts = [methods, pairs]
    if multiple:
        ranking = _table(title=f"ranking (significant at alpha {result['alpha']:g} after Holm, {level} level)")
        for col in ("rank", "method", "accuracy", "possible ranks", "significantly better than", "not distinguished from"):
            _column(ranking, col, left=col not in ("rank", "accuracy"))
        for r in result["ranking"]:
            lo, hi = r["possible_ranks"]
            ranking.add_row(str(r["rank"]), r["method"], f"{r['accuracy']:.2f}", str(lo) if lo == hi else f"{lo}-{hi}",
                            ", ".join(r["significantly_better_than"]) or "-", ", ".join(r["not_distinguished_from"]) or "-")
        parts.append(ranking)
    parts.append(Text("\n".join(result["verdict"])))
    return Group(*parts)


def console(rendered):
    """A console that fits the terminal (a cell folds there, never cut); when not a terminal, one as wide as the
    tables of `rendered` (150 columns at least), so that a log holds every row whole."""
    import sys

    from harness.console import Console  # a closed pipe ends the command quietly
    from harness.report import needed_width

    if sys.stdout.isatty():
        return Console()
    tables = rendered.renderables[:-1]  # the verdict's sentences wrap at the tables' width
    return Console(width=max(150, Console().width, needed_width(*tables)), soft_wrap=False)


def cmd_compare(args) -> int:
    """`bench.py compare A B [C ...] --protocol P [--results DIR] [--alpha 0.05] [--level videos] [--json FILE]`."""
    if any(":" in m for m in args.methods):  # package.module:Class, as `run --method` took it: its results' name
        import harness.packages  # noqa: F401  (the harness's own methods/)
        from methods.external import method_name

        args.methods = [method_name(m, where="METHOD") for m in args.methods]
    result = compare(args.methods, args.protocol, args.results, alpha=args.alpha, n_resamples=getattr(args, "resamples", DEFAULT_RESAMPLES),
                     seed=getattr(args, "seed", 0), level=getattr(args, "level", "videos"))
    rendered = render(result)
    console(rendered).print(rendered)
    if args.json:
        atomic_write_json(Path(args.json), result)
        print(f"comparison written to {args.json}")
    return 0
