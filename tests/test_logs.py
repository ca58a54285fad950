"""Output a person and a cluster log can read: progress lines off a terminal, lines never wrapped, one voice
under torchrun, and a closed pipe that ends a command quietly."""
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.console import log, progress_bar, warn

BENCH = Path(__file__).resolve().parents[1] / "bench.py"
#: a progress line with rate and ETA: "<step>: 30/300 videos (10%), 168 videos/s, 0 s elapsed, ETA 2 s"
LINE = re.compile(r"^(?P<step>.+): (?P<done>[\d,]+)/(?P<total>[\d,]+) (?P<unit>\w+) \(\d+%\), [\d.,]+ (?P=unit)/s, \d.* elapsed, ETA \d")
END = re.compile(r"^(?P<step>.+): (?P<done>[\d,]+)/(?P=done) (?P<unit>\w+) \(100%\), [\d.,]+ (?P=unit)/s, done in \d")
SYNTH = ["synth", "--videos-per-class", "3", "--frames", "3", "--size", "16"]  # 100 classes x 3 videos


def bench(*argv: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """bench.py with stdout and stderr piped, as in a cluster job; no variable that would make rich draw bars."""
    clean = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "RANK", "WORLD_SIZE", "FSV_PROGRESS_SECONDS")}
    return subprocess.run([sys.executable, str(BENCH), *argv], env={**clean, "OMP_NUM_THREADS": "1", **(env or {})},
                          capture_output=True, text=True, timeout=300, **kwargs)


def progress(stderr: str, step: str) -> list[tuple[int, int]]:
    """(done, total) of each periodic progress line of `step`."""
    return [(int(m["done"].replace(",", "")), int(m["total"].replace(",", ""))) for line in stderr.splitlines() if (m := LINE.match(line)) and m["step"] == step]


@pytest.mark.slow
def test_off_a_terminal_progress_is_a_line_per_tenth_with_rate_and_eta_and_a_long_path_stays_whole(tmp_path):
    out = tmp_path / ("a-folder-name-longer-than-any-terminal-" * 4) / "synthetic"
    done = bench(*SYNTH, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr + done.stdout, "no escape codes in a log file"
    lines = done.stderr.splitlines()
    assert "synthetic videos: 300 videos to do" in lines
    periodic = progress(done.stderr, "synthetic videos")
    tenths = [d * 10 // t for d, t in periodic]
    assert 5 <= len(periodic) <= 9 and tenths == sorted(set(tenths)), f"one line per tenth passed, at most:\n{done.stderr}"
    assert all(t == 300 and 0 < d < 300 for d, t in periodic)
    assert sum(bool(END.match(line)) for line in lines) == 1 and END.match(lines[-1]), done.stderr
    # the path, 170 characters, is on one line of each stream: rich would have cut it at 80 columns
    assert f"generating the synthetic benchmark in {out} (300 videos)" in lines
    assert any(line.startswith(f"synthetic benchmark in {out} (") for line in done.stdout.splitlines())


@pytest.mark.slow
def test_quiet_silences_progress_but_not_the_messages(tmp_path):
    done = bench(*SYNTH, "--out", str(tmp_path / "synthetic"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "generating the synthetic benchmark" in done.stderr
    assert "synthetic videos" not in done.stderr


@pytest.mark.slow
def test_on_a_terminal_progress_stays_a_bar(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "RANK", "WORLD_SIZE")}
    reader, terminal = pty.openpty()
    command = subprocess.Popen([sys.executable, str(BENCH), *SYNTH, "--out", str(tmp_path / "synthetic")], stdout=subprocess.DEVNULL, stderr=terminal, env=clean)
    os.close(terminal)
    shown = b""
    while True:  # read as it comes: a full terminal would stop the command
        try:
            chunk = os.read(reader, 65536)
        except OSError:  # the command closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(reader)
    assert command.wait(timeout=300) == 0
    assert "━" in shown.decode(errors="replace") and b"videos to do" not in shown


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory, protocol, home):
    """A tiny `run` with its output piped and a progress line due at every step (FSV_PROGRESS_SECONDS=0)."""
    results = tmp_path_factory.mktemp("results")
    done = bench("run", "--protocol", str(protocol.source), "--method", "protonet", "--home", str(home), "--results", str(results),
                 "--batch-episodes", "20", env={"FSV_PROGRESS_SECONDS": "0"})
    assert done.returncode == 0, done.stderr
    return done, results


@pytest.fixture(scope="module")
def protocol(tmp_path_factory, tiny_root, home):
    """The tiny protocol of conftest, its backbone pretrained in `home`; one per module (the run is too)."""
    from conftest import TINY_PROTOCOL, settings
    from harness.pipeline import backbone_for
    from harness.protocol import load_protocol

    path = tmp_path_factory.mktemp("protocol") / "tiny-5w1s.yaml"
    path.write_text(TINY_PROTOCOL.format(name="tiny-5w1s", root=tiny_root, shot=1, episodes=200))
    p = load_protocol(path)
    backbone_for(p, settings(home, home / "unused"), pretrain_if_missing=True)
    return p


def test_a_run_shows_its_embedding_and_scoring_with_rate_and_eta(piped_run):
    done, _ = piped_run
    scoring = progress(done.stderr, "protonet on tiny-5w1s")
    assert [d for d, _ in scoring] == list(range(20, 200, 20)) and {t for _, t in scoring} == {200}, "a line at every step with FSV_PROGRESS_SECONDS=0"
    assert progress(done.stderr, "embedding test videos"), done.stderr
    assert any(END.match(line) and line.startswith("protonet on tiny-5w1s: 200/200 episodes") for line in done.stderr.splitlines())


@pytest.mark.parametrize("argv", [["list"], ["leaderboard"], ["leaderboard", "--format", "md"]])
def test_a_closed_pipe_ends_the_command_quietly(piped_run, argv):
    _, results = piped_run
    if argv[0] == "leaderboard":
        argv = [*argv, "--results", str(results)]
    clean = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    command = subprocess.Popen([sys.executable, str(BENCH), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean)
    command.stdout.close()  # the reader is gone before the first line: `bench.py list | head -0`
    stderr = command.stderr.read().decode()
    assert command.wait(timeout=120) == 141, "the status of a Unix tool killed by SIGPIPE"
    assert stderr == ""


def test_head_reads_the_first_line_and_nothing_complains(piped_run):
    _, results = piped_run
    shell = f"set -o pipefail; {sys.executable} {BENCH} leaderboard --format md --results {results} | head -1"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120)
    assert done.stdout.count("\n") == 1 and done.stderr == ""
    assert done.returncode in (0, 141), "0 when the whole table fitted in the pipe before head left"


def test_between_lines_that_take_long_a_line_comes_every_few_seconds(monkeypatch, capsys):
    monkeypatch.setenv("FSV_PROGRESS_SECONDS", "0.1")
    with progress_bar("slow step", 1000, unit="steps") as advance:
        time.sleep(0.5)  # no step finished: lines say so
        advance(1)
        time.sleep(0.5)  # one step done of 1000, far from a tenth: lines come by time, with the rate
    err = capsys.readouterr().err
    waiting = [line for line in err.splitlines() if line.startswith("slow step: 0/1,000 steps (0%)") and "none finished yet" in line]
    assert len(waiting) >= 2, err
    assert len(progress(err, "slow step")) >= 2 and set(progress(err, "slow step")) == {(1, 1000)}, err


def test_a_bad_progress_interval_is_refused_with_the_fix(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FSV_PROGRESS_SECONDS", "soon")
    assert main(SYNTH + ["--out", str(tmp_path / "synthetic")]) == 2
    err = capsys.readouterr().err
    assert "FSV_PROGRESS_SECONDS is 'soon', not a number of seconds" in err and "fix: set FSV_PROGRESS_SECONDS" in err


def test_under_torchrun_rank_0_speaks_and_the_others_only_warn_labelled(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "4")
    for rank in ("0", "2"):
        monkeypatch.setenv("RANK", rank)
        log(f"message of rank {rank}")
        warn(f"warning of rank {rank}: /a/path [with brackets]")
        with progress_bar(f"step of rank {rank}", 10, unit="steps") as advance:
            advance(10)
    err = capsys.readouterr().err.splitlines()
    assert "message of rank 0" in err and "warning of rank 0: /a/path [with brackets]" in err
    assert "step of rank 0: 10 steps to do" in err
    assert "[rank 2/4] warning of rank 2: /a/path [with brackets]" in err
    assert not any("message of rank 2" in line or "step of rank 2" in line for line in err)


def test_under_torchrun_an_error_says_which_rank_had_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["synth", "--out", str(tmp_path), "--size", "5"]) == 2
    assert capsys.readouterr().err.startswith("[rank 1/2] error: --size: 5 is outside 16..1024")
