"""The common options (--home, --results, --device, ...) reach the command wherever they stand on the command line.

`bench.py --home X run ...` and `bench.py run --home X ...` must mean the same; a value given in both places must
agree; an option the command does not use is refused by name, and a value that cannot work is refused before
any work starts (exit 2, `error: ...` and `fix: ...`, no traceback).
"""
from __future__ import annotations

import json

import pytest
import torch

from harness import cli
from harness.cli import main

# each command: the function that runs it, and the shortest command line it accepts
COMMANDS = {
    "quickstart": ("cmd_quickstart", []),
    "synth": ("cmd_synth", ["synth", "--out", "somewhere"]),
    "pretrain": ("cmd_pretrain", ["pretrain", "--protocol", "p.yaml"]),
    "run": ("cmd_run", ["run", "--protocol", "p.yaml", "--method", "protonet"]),
    "train": ("cmd_train", ["train", "--protocol", "p.yaml", "--method", "trx"]),
    "import-checkpoint": ("cmd_import_checkpoint", ["import-checkpoint", "--from", "trx", "ref.pth", "--protocol", "p.yaml"]),
    "splits verify": ("cmd_splits", ["splits", "verify", "splits-folder"]),
    "compare": ("cmd_compare", ["compare", "protonet", "otam", "--protocol", "p"]),
    "leaderboard": ("cmd_leaderboard", ["leaderboard"]),
    "perf": ("cmd_perf", ["perf"]),
    "list": ("cmd_list", ["list"]),
}

# each common option: what is typed, and what the command must receive
GIVEN = {
    "--home": (["--home", "/data/fsv"], "home", "/data/fsv"),
    "--results": (["--results", "/data/results"], "results", "/data/results"),
    "--device": (["--device", "cpu"], "device", "cpu"),
    "--workers": (["--workers", "3"], "workers", 3),
    "--batch-episodes": (["--batch-episodes", "7"], "batch_episodes", 7),
    "--episodes": (["--episodes", "5"], "episodes", 5),
    "--quiet": (["--quiet"], "quiet", True),
    "--precision": (["--precision", "bf16"], "precision", "bf16"),
    "--recompute": (["--recompute"], "recompute", True),
}
DEFAULTS = {"home": None, "results": "results", "device": "auto", "workers": 0, "batch_episodes": 1000, "episodes": None,
            "quiet": False, "precision": "fp32", "recompute": False}

EVERY = tuple(GIVEN)
# the common options each command takes; it refuses the others
TAKES = {
    "quickstart": EVERY,
    "synth": ("--workers", "--quiet"),
    "pretrain": ("--home", "--workers", "--quiet"),
    "run": EVERY,
    "train": ("--home", "--device", "--workers", "--batch-episodes", "--quiet", "--precision", "--recompute"),
    "import-checkpoint": (),
    "splits verify": (),
    "compare": ("--results",),
    "leaderboard": ("--results",),
    "perf": ("--home", "--device", "--workers", "--episodes"),
    "list": (),
}


def placed(command: str, option: list[str], where: str) -> list[str]:
    """The command line of `command` with `option` before the command's name or after its arguments."""
    argv = COMMANDS[command][1]
    return [*option, *argv] if where == "before" else [*argv, *option]


@pytest.fixture
def captured(monkeypatch):
    """Replace every command's function by one that keeps the arguments it was given and does nothing."""
    seen = []

    def keep(args):
        seen.append(args)
        return 0

    for func, _ in COMMANDS.values():
        monkeypatch.setattr(cli, func, keep)
    return seen


def refused(capsys, argv: list[str], *words: str) -> str:
    """`argv` exits 2 with one `error:` paragraph and its fix, no traceback, naming every one of `words`."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, f"exit {rc}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in out + err
    assert err.startswith("error: ") and "\n  fix: " in err, err
    for w in words:
        assert w in err, f"{w!r} not in:\n{err}"
    return err


PLACES = [(c, o, w) for c in COMMANDS for o in TAKES[c] for w in (("before",) if c == "quickstart" else ("before", "after"))]


@pytest.mark.parametrize("command, option, where", PLACES, ids=[f"{c}-{o}-{w}" for c, o, w in PLACES])
def test_a_common_option_reaches_the_command_before_or_after_its_name(captured, command, option, where):
    typed, dest, value = GIVEN[option]
    assert main(placed(command, typed, where)) == 0
    (args,) = captured
    assert getattr(args, dest) == value
    for other, default in DEFAULTS.items():  # the options not given keep their defaults
        if other != dest:
            assert getattr(args, other) == default, other


@pytest.mark.parametrize("where", ["before", "after"])
def test_all_options_together_reach_run(captured, where):
    typed = [word for option in EVERY for word in GIVEN[option][0]]
    assert main(placed("run", typed, where)) == 0
    assert {dest: getattr(captured[0], dest) for _, dest, _ in GIVEN.values()} == {dest: value for _, dest, value in GIVEN.values()}


def test_options_split_on_both_sides_of_the_command_all_arrive(captured):
    assert main(["--home", "/h", "--quiet", "--episodes", "9", "run", "--protocol", "p", "--method", "protonet", "--results", "/r", "--workers", "2"]) == 0
    args = captured[0]
    assert (args.home, args.quiet, args.episodes, args.results, args.workers) == ("/h", True, 9, "/r", 2)


UNUSED = [(c, o, w) for c in COMMANDS if c != "quickstart" for o in EVERY if o not in TAKES[c] for w in ("before", "after")]


@pytest.mark.parametrize("command, option, where", UNUSED, ids=[f"{c}-{o}-{w}" for c, o, w in UNUSED])
def test_an_option_the_command_does_not_use_is_refused_by_name(captured, capsys, command, option, where):
    err = refused(capsys, placed(command, GIVEN[option][0], where), f"error: {option}: not used by `fsv-bench {command}`", "fix: leave " + option + " out")
    assert captured == [], "the command ran"
    for takes in TAKES[command]:
        assert takes in err.split("fix:")[1]  # the fix says what the command takes instead


def test_splits_refuses_common_options_between_its_two_words(captured, capsys):
    refused(capsys, ["splits", "--quiet", "verify", "folder"], "--quiet", "`fsv-bench splits verify`", "none of the common options")
    assert captured == []


@pytest.mark.parametrize("option", EVERY)
def test_one_value_given_on_both_sides_is_accepted(captured, option):
    typed, dest, value = GIVEN[option]
    assert main([*typed, "run", "--protocol", "p", "--method", "protonet", *typed]) == 0
    assert getattr(captured[0], dest) == value


def test_one_folder_written_two_ways_is_one_value(captured, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--home", "data", "run", "--protocol", "p", "--method", "protonet", "--home", str(tmp_path / "data")]) == 0
    assert captured[0].home == str(tmp_path / "data")


@pytest.mark.parametrize("option, first, second", [
    ("--home", "/a", "/b"), ("--results", "r1", "r2"), ("--device", "cpu", "auto"), ("--workers", "0", "2"),
    ("--batch-episodes", "10", "20"), ("--episodes", "5", "6"), ("--precision", "fp32", "bf16"),
])
def test_two_different_values_on_both_sides_are_refused(captured, capsys, option, first, second):
    refused(capsys, [option, first, "run", "--protocol", "p", "--method", "protonet", option, second],
            f"error: {option}: given twice with different values: {first} before `run` and {second} after it", f"give {option} once")
    assert captured == []


BAD = [
    ("--episodes", "0", "0 episodes would evaluate nothing", "N >= 1"),
    ("--episodes", "-4", "-4 episodes would evaluate nothing", "N >= 1"),
    ("--batch-episodes", "0", "0 episodes per batch cannot score anything", "N >= 1"),
    ("--batch-episodes", "-1", "-1 episodes per batch cannot score anything", "N >= 1"),
    ("--workers", "-1", "-1 worker processes: a count cannot be negative", "--workers 0"),
    ("--device", "gpu", "unknown device 'gpu'", "use auto, cpu, cuda or cuda:N"),
    ("--device", "cuda:x", "unknown device 'cuda:x'", "use auto, cpu, cuda or cuda:N"),
    ("--device", "cuda:-1", "unknown device 'cuda:-1'", "use auto, cpu, cuda or cuda:N"),
    ("--device", "CPU", "unknown device 'CPU'", "use auto, cpu, cuda or cuda:N"),
]
BAD_PLACES = [(*bad, command, where) for bad in BAD for command in ("run", "perf", "quickstart", "train") if bad[0] in TAKES[command]
              for where in (("before",) if command == "quickstart" else ("before", "after"))]


@pytest.mark.parametrize("option, value, what, fix, command, where", BAD_PLACES, ids=[f"{c}-{o}={v}-{w}" for o, v, _, _, c, w in BAD_PLACES])
def test_a_value_that_cannot_work_is_refused_before_the_command_runs(captured, capsys, option, value, what, fix, command, where):
    err = refused(capsys, placed(command, [option, value], where), f"error: {option}: {what}")
    assert fix in err.split("fix:")[1]
    assert captured == [], "the command ran"


def test_cuda_on_a_machine_without_it_is_refused(captured, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    refused(capsys, ["--device", "cuda", "run", "--protocol", "p", "--method", "protonet"], "--device cuda", "PyTorch sees no CUDA device", "--device cpu")
    refused(capsys, ["perf", "--device", "cuda:0"], "--device cuda", "no CUDA device")
    assert captured == []


def test_a_gpu_index_beyond_the_machines_gpus_is_refused(captured, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    refused(capsys, ["run", "--protocol", "p", "--method", "protonet", "--device", "cuda:2"], "error: --device: there is no GPU cuda:2", "cuda:0 to cuda:1", "N below 2")
    assert captured == []
    assert main(["--device", "cuda:1", "run", "--protocol", "p", "--method", "protonet"]) == 0
    assert captured[0].device == "cuda:1"


def test_argparse_refuses_a_value_of_the_wrong_kind_with_exit_2(capsys):
    for argv in (["--workers", "two", "list"], ["run", "--protocol", "p", "--method", "protonet", "--precision", "fp16"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert argv[argv.index("--workers") if "--workers" in argv else argv.index("--precision")] in capsys.readouterr().err


def test_a_commands_help_lists_only_the_common_options_it_takes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["leaderboard", "--help"])
    assert e.value.code == 0
    options, epilog = capsys.readouterr().out.split("The common options")
    assert "--results" in options and "--episodes" not in options and "--home" not in options
    epilog = " ".join(epilog.split())  # as wrapped to the terminal's width
    assert "before or after the command" in epilog and "must agree" in epilog


@pytest.mark.parametrize("where", ["before", "after"])
def test_run_uses_the_home_and_results_given_before_or_after_it(protocol, home, tmp_path, monkeypatch, capsys, where):
    """The real command: the tiny benchmark's backbone is pretrained only in `home`, so a run that looked
    anywhere else (./.fsv, $FSV_HOME) would stop with "has not been pretrained"."""
    monkeypatch.delenv("FSV_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    results = tmp_path / f"results-{where}"
    common = ["--home", str(home), "--results", str(results), "--device", "cpu", "--quiet", "--episodes", "30", "--batch-episodes", "8"]
    command = ["run", "--protocol", protocol.source, "--method", "protonet"]
    assert main([*common, *command] if where == "before" else [*command, *common]) == 0, capsys.readouterr().err
    summary = json.loads((results / "tiny-5w1s/protonet/summary.json").read_text())
    assert summary["n_episodes"] == 30 and summary["device"] == "cpu"
    assert len((results / "tiny-5w1s/protonet/episodes.jsonl").read_text().splitlines()) == 30
    assert list((home / "features").iterdir()), "no features in the --home folder"
    assert not (tmp_path / ".fsv").exists() and not (tmp_path / "results").exists(), "a default folder was used"
