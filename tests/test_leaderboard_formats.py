"""The leaderboard for papers (latex) and websites (html): the json's numbers, names escaped, published numbers apart."""
import argparse
import json
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser

import pytest

from harness import leaderboard, publish
from harness.cli import build_parser, main
from test_leaderboard import content, edit_summary, fake_benchmark_run, results  # noqa: F401 (a fixture)

#: a method and a protocol named with every character that means something to LaTeX or HTML
HOSTILE_METHOD = 'a_b&c%#$~^\\{x}[y]<script>"--z\n% after a line break'
HOSTILE_PROTOCOL = "p#1_x&y%<b>"
NUMBER = re.compile(r"\d+\.\d+")


def expected_numbers(m: dict, headline: str) -> list[float]:
    """The numbers of a cell, in order, from the json: the mean, then the intervals as interval_cell orders them."""
    second = "videos" if headline == "episodes" else headline
    low, high = m["intervals"][second]["low"], m["intervals"][second]["high"]
    return [m["accuracy"], m["ci95"], low, high] if headline == "episodes" else [m["accuracy"], low, high, m["ci95"]]


# ----------------------------------------------------------------------------------------- reading LaTeX


def tabular_rows(tex: str) -> list[list[str]]:
    """The rows of the tabular, split at unescaped `&` (comment lines and rules left out)."""
    body = tex.split("\\begin{tabular}", 1)[1].split("\\end{tabular}", 1)[0].splitlines()[1:]
    rows = []
    for line in body:
        if line.strip() in ("\\toprule", "\\midrule", "\\bottomrule"):
            continue
        assert line.endswith(" \\\\"), line
        rows.append([c.strip() for c in re.split(r"(?<!\\)&", line[: -len(" \\\\")])])
    return rows


def check_latex_structure(tex: str) -> None:
    """What would stop pdflatex: unbalanced braces, a row with another number of cells, an unescaped special."""
    lines = tex.splitlines()
    body = [line for line in lines if not line.startswith("%")]
    assert body[0].startswith("\\begin{tabular}{l") and body[-1] == "\\end{tabular}"
    assert all(line.startswith("% ") for line in lines if line not in body), "every line above the table is a comment"
    width = len(re.search(r"\\begin\{tabular\}\{(l+r*)\}", body[0]).group(1))
    for line in body:
        unescaped = re.sub(r"\\[\\{}&%$#_]", "", line)  # \\ \{ \} \& \% \$ \# \_ are text or the row's end
        depth = 0
        for c in unescaped:
            depth += {"{": 1, "}": -1}.get(c, 0)
            assert depth >= 0, line
        assert depth == 0, line
        assert not re.search(r"[%#_^~]", unescaped), line
        assert unescaped.count("$") == 2 * unescaped.count("$\\pm$"), f"$ only around \\pm: {line}"
    for row in tabular_rows(tex):
        spans = re.match(r"\\multicolumn\{(\d+)\}", row[0])
        assert (int(spans.group(1)) if spans else len(row)) == width, row


# ------------------------------------------------------------------------------------------ reading HTML


class Page(HTMLParser):
    """Checks that tags are balanced; collects the text of every table's cells, by table class."""

    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def __init__(self, html: str):
        super().__init__()
        self.open, self.tables, self.starts, self.cell = [], {}, [], None
        self.feed(html)
        self.close()
        assert self.open == [], f"unclosed: {self.open}"

    def handle_starttag(self, tag, attrs):
        self.starts.append(tag)
        if tag in self.VOID:
            return
        self.open.append(tag)
        if tag == "table":
            self.table = self.tables.setdefault(dict(attrs)["class"], [])
        elif tag == "tr":
            self.table.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        if tag in ("td", "th"):
            self.table[-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def strong_cells(html: str) -> list[str]:
    return re.findall(r"<strong>([^<]*)</strong>", html)


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("headline", ["videos", "episodes"])
def test_latex_and_html_show_the_json_numbers_with_the_best_mean_in_bold(results, headline):  # noqa: F811
    board = leaderboard.build(results, headline)
    data = json.loads(leaderboard.render(board, "json"))
    tex, html = leaderboard.render(board, "latex"), leaderboard.render(board, "html")
    check_latex_structure(tex)
    header, *rows = tabular_rows(tex)
    page = Page(html)
    html_header, *html_rows = page.tables["measured"]
    assert header[0] == html_header[0] == "method" and len(rows) == len(html_rows) == 2
    for m in data["measured"]:
        column = [c["name"] for c in data["protocols"]].index(m["column"]) + 1
        latex_cell = next(r for r in rows if r[0] == m["method"])[column]
        html_cell = next(r for r in html_rows if r[0] == m["method"])[column]
        for cell in (latex_cell, html_cell):
            assert [float(x) for x in NUMBER.findall(cell)] == pytest.approx(expected_numbers(m, headline), abs=0.005), cell
        assert latex_cell.startswith("\\textbf{") == m["best"] and (f"[{m['ref']}]" in html_cell)
        assert "$\\pm$" in latex_cell and "±" not in latex_cell and "±" in html_cell
    best = [m for m in data["measured"] if m["best"]]
    assert len(best) == 1 and best[0]["accuracy"] == max(m["accuracy"] for m in data["measured"] if m["column"] == best[0]["column"])
    assert [float(x) for x in strong_cells(html)] == pytest.approx([best[0]["accuracy"]], abs=0.005)
    assert "% bold: best mean accuracy among comparable cells of a column" in tex
    assert f"% generated by fsv-bench leaderboard --results {results} --interval {headline} --format latex" in tex
    for m in data["measured"]:  # provenance kept, as comments
        assert f"% [{m['ref']}] {m['method']} on {m['column']}: n={m['n_episodes']}, protocol {m['protocol_sha256'][:12]}" in tex
    flat = unescape(" ".join(html.split()))
    assert "± episodes: this pool of test videos (the papers' interval" in flat and f"Shown first: {headline}" in flat
    assert "<link" not in html and "<script" not in html and "src=" not in html, "nothing outside the page"


def test_hostile_names_are_escaped(results, tmp_path):  # noqa: F811
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    shutil.copytree(results / "tiny-5w1s" / "protonet", board_dir / HOSTILE_PROTOCOL / "hostile")
    edit_summary(board_dir / HOSTILE_PROTOCOL / "hostile", protocol=HOSTILE_PROTOCOL, method=HOSTILE_METHOD)
    board = leaderboard.build(board_dir)
    assert board["unverified"] == [] and {m["method"] for m in board["measured"]} >= {HOSTILE_METHOD}

    tex = leaderboard.render(board, "latex")
    check_latex_structure(tex)
    rows = tabular_rows(tex)
    assert "p\\#1\\_x\\&y\\%\\textless{}b\\textgreater{} (5-way 1-shot), n=200" in rows[0]
    name = ("a\\_b\\&c\\%\\#\\$\\textasciitilde{}\\textasciicircum{}\\textbackslash{}\\{x\\}{[}y{]}\\textless{}script\\textgreater{}\"-{}-z "
            "\\% after a line break")
    assert [r[0] for r in rows[1:]] == [name, "protonet", "protonet-cosine"]
    assert "\n% % after a line break on p#1_x&y%<b>: n=200" in tex, "a line break in a name never ends a comment"

    html = leaderboard.render(board, "html", picture=True)
    page = Page(html)
    assert "script" not in page.starts and "b" not in page.starts
    assert HOSTILE_METHOD.replace("\n", " ") in [" ".join(r[0].split("\n")) for r in page.tables["measured"]]
    assert f"{HOSTILE_PROTOCOL} (5-way 1-shot), n=200" in page.tables["measured"][0]
    assert "&lt;script&gt;&quot;--z" in html


def test_published_numbers_stay_apart_and_are_never_bold(results, tmp_path):  # noqa: F811
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    fake_benchmark_run(board_dir, results / "tiny-5w1s" / "protonet", "hmdb-arn-5w5s", content("hmdb51"))
    fake_benchmark_run(board_dir, results / "tiny-5w1s" / "protonet-cosine", "hmdb-arn-5w5s", content("hmdb51"), "protonet-cosine")
    board = leaderboard.build(board_dir)
    published = {(r["method"], r["accuracy"]) for r in board["reported"]}
    assert published == {("ARN", 60.6), ("TRX", 75.6)}

    tex = leaderboard.render(board, "latex")
    check_latex_structure(tex)
    measured_part, reported_part = tex.split("\\multicolumn{4}{l}{\\emph{Reported in papers (not measured here; other episodes, backbones and evaluation)}} \\\\")
    assert "75.6" not in measured_part and "60.6" not in measured_part and "\\textbf" not in reported_part
    rows = {r[0]: r for r in tabular_rows("\\begin{tabular}{lrrr}" + reported_part)}
    assert rows["TRX (STRM (Thatipelli et al., CVPR 2022), Table 1)"] == ["TRX (STRM (Thatipelli et al., CVPR 2022), Table 1)", "75.6", "-", "-"]
    assert len(rows) == 2 and measured_part.count("\\textbf{") == 2, "one best in each column of two methods"

    html = leaderboard.render(board, "html")
    page = Page(html)
    measured = " ".join(" ".join(r) for r in page.tables["measured"])
    assert "75.6" not in measured and "TRX" not in measured
    assert page.tables["reported"] == [["method", "hmdb-arn-5w5s", "source"], ["ARN", "60.6", "STRM (Thatipelli et al., CVPR 2022), Table 1"],
                                       ["TRX", "75.6", "STRM (Thatipelli et al., CVPR 2022), Table 1"]]
    assert html.index("<h2>Reported in papers (not measured here") > html.index("</table>"), "below the measured table"
    assert "<strong>" not in html.split('<table class="reported">')[1] and len(strong_cells(html)) == 2


def test_the_command_offers_latex_and_html_and_writes_them_like_the_others(results, tmp_path, capsys):  # noqa: F811
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    choice = next(a for a in commands["leaderboard"]._actions if "--format" in a.option_strings).choices
    assert list(choice) == list(leaderboard.FORMATS) and {"latex", "html"} <= set(choice)

    out = tmp_path / "paper" / "board.tex"
    assert main(["leaderboard", "--results", str(results), "--format", "latex", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"leaderboard written to {out}\n"
    assert out.read_text() == leaderboard.render(leaderboard.build(results), "latex")
    assert [p.name for p in out.parent.iterdir()] == ["board.tex"], "written atomically"

    assert main(["leaderboard", "--results", str(results), "--format", "html", "--plot", str(tmp_path / "board.svg")]) == 0
    printed = capsys.readouterr().out
    page = printed.split("picture written to")[0]
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 1 and page.count('class="mean"') == 3
    Page(page)
    assert main(["leaderboard", "--results", str(results), "--format", "html"]) == 0
    assert "<svg" not in capsys.readouterr().out, "the picture only when --plot asks for one"


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="pdflatex is not installed (the structure is checked above)")
def test_the_latex_table_compiles(results, tmp_path):  # noqa: F811
    board_dir = tmp_path / "results"
    shutil.copytree(results, board_dir)
    shutil.copytree(results / "tiny-5w1s" / "protonet", board_dir / HOSTILE_PROTOCOL / "hostile")
    edit_summary(board_dir / HOSTILE_PROTOCOL / "hostile", protocol=HOSTILE_PROTOCOL, method=HOSTILE_METHOD)
    (tmp_path / "board.tex").write_text(publish.to_latex(leaderboard.build(board_dir)))
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\\input{board.tex}\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
