"""The command line. `fsv-bench` with no arguments runs the quickstart."""
from __future__ import annotations

import argparse
import os
import shutil
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import harness.packages  # noqa: F401  (the harness's own methods/, whatever sys.path holds)
from harness.errors import HarnessError

_UNSET = object()  # an option that was not given


def _settings(args):
    from harness.distributed import device_for_rank
    from harness.pipeline import Settings, pick_device
    from harness.protocol import data_home

    return Settings(
        home=data_home(args.home),
        results=Path(args.results).absolute(),
        device=device_for_rank(pick_device(args.device)),
        workers=args.workers,
        batch_episodes=args.batch_episodes,
        show_progress=False if args.quiet else None,
        recompute=args.recompute,
        precision=args.precision,
        decode=args.decode,
    )


def _protocol(args):
    from harness.backbones import list_backbones
    from harness.protocol import find_protocol, load_protocol

    p = load_protocol(find_protocol(args.protocol), args.set)
    args.loaded_protocol = p  # errors from deeper down that name a field are told which file set it
    _method_specs(args)  # before the protocol's methods: section is checked, which may name them
    if p.backbone.name not in list_backbones():  # before any video is indexed or embedded
        raise HarnessError(f"unknown backbone '{p.backbone.name}'", where=p.where("backbone.name"), fix=f"use one of: {', '.join(list_backbones())}")
    from harness.limits import check_protocol
    from harness.pipeline import pick_device

    uses = USES.get(args.command_name, ())  # pretrain and import-checkpoint run on the CPU
    device = pick_device(args.device) if "--device" in uses else "cpu"
    check_protocol(p, device, args.workers if "--workers" in uses else 0)  # methods: settings, frames against the backbone and the memory
    return p


def _method_specs(args) -> None:
    """Each `--method package.module:Class` imported, registered, and replaced by its registered name."""
    if isinstance(getattr(args, "method", None), (str, list)):
        from methods.external import method_name

        args.method = method_name(args.method) if isinstance(args.method, str) else [method_name(m) for m in args.method]


def _check_methods(names: list[str]) -> None:
    import methods

    for name in names:
        if not methods.registered(name):  # loads the installed plug-in of that name, if there is one
            raise HarnessError(f"unknown method '{name}'", where="--method",
                               fix=f"use one of: {', '.join(methods.list_methods())}, or a Head class as package.module:Class (README: Adding a method)")


def _check_results_writable(results: Path) -> None:
    """Fail before any work when the results folder cannot be written (not after an hour of embedding)."""
    import tempfile

    fix = "pass --results a folder you can write to (it is created if missing), or fix the folder's permissions"
    existing = results  # the folder itself, or the nearest folder above it that exists (nothing is created here)
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == results else f"would be created under {existing}, which is a file"
        raise HarnessError(f"results folder {results} {what}", where="--results", fix=fix)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = "" if existing == results else f" (it would be created in {existing})"
        raise HarnessError(f"results folder {results} cannot be written{where}: {e.strerror or e}", where="--results", fix=fix) from None


def cmd_quickstart(args) -> int:
    from harness.quickstart import quickstart

    quickstart(_settings(args), episodes=args.episodes, interval=args.interval)
    return 0


def cmd_synth(args) -> int:
    from harness.data.synthetic import SyntheticSpec
    from harness.pipeline import generate_synthetic

    _check_synth(args)
    spec = SyntheticSpec(seed=args.seed, videos_per_class=args.videos_per_class, frames=args.frames, size=args.size)
    started = time.perf_counter()
    root = generate_synthetic(Path(args.out), spec, False if args.quiet else None, workers=args.workers or min(2, os.cpu_count() or 1))
    print(f"synthetic benchmark in {root} ({time.perf_counter() - started:.1f} s)")
    return 0


#: what `synth` accepts: option -> (least, most); the most keep one run under about 100 GB of JPEG frames
SYNTH_LIMITS = {"--videos-per-class": (3, 2000), "--frames": (3, 512), "--size": (16, 1024)}


def _check_synth(args) -> None:
    """Each size of `synth` within SYNTH_LIMITS, and the frames to write within what the disk could hold."""
    for option, (least, most) in SYNTH_LIMITS.items():
        value = getattr(args, option[2:].replace("-", "_"))
        if not least <= value <= most:
            raise HarnessError(f"{option}: {value} is outside {least}..{most}", fix=f"use {option} between {least} and {most}")
    from harness.data.synthetic import SyntheticSpec

    spec = SyntheticSpec()
    videos = (spec.n_train + spec.n_val + spec.n_test) * args.videos_per_class
    need = videos * args.frames * args.size * args.size * 3 // 10  # a JPEG frame of this noise-free scene: ~1/10 of its pixels' bytes
    free = shutil.disk_usage(_existing_parent(Path(args.out))).free
    if need > free:
        raise HarnessError(f"--out {args.out}: {videos} videos of {args.frames} frames of {args.size}x{args.size} need about {need / 2**30:.1f} GiB, "
                           f"{free / 2**30:.1f} GiB are free there", fix="use fewer --videos-per-class, --frames or a smaller --size, or another --out")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def cmd_pretrain(args) -> int:
    from harness.pipeline import backbone_for

    p = _protocol(args)
    _, sha, path = backbone_for(p, _settings(args), pretrain_if_missing=True)
    print(f"backbone '{p.backbone.name}' weights: {path} (sha256 {sha[:16]}...)")
    return 0


def cmd_run(args) -> int:
    from harness.pipeline import run_method
    from harness.report import print_summaries

    p = _protocol(args)
    _check_methods(args.method)
    settings = _settings(args)
    _check_results_writable(settings.results)
    if args.checkpoint and len(args.method) > 1:
        raise HarnessError("--checkpoint names one method's checkpoint, but several --method were given", fix="run one method at a time with --checkpoint")
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    summaries = [run_method(p, m, settings, n_episodes=args.episodes, checkpoint=checkpoint) for m in args.method]
    summaries = [x for x in summaries if x]  # under torchrun only rank 0 holds the merged results
    if summaries:
        print_summaries(summaries, interval=args.interval)
    return 0


def cmd_train(args) -> int:
    from harness.train import train

    p = _protocol(args)
    _check_methods([args.method])
    summary = train(p, args.method, _settings(args), resume=args.resume)
    print(f"{summary['method']} on {summary['protocol']}: selected step {summary['selected_step']} "
          f"(val accuracy {summary['selected_val_accuracy']:.2f}% on {summary['selected_on']['episodes']} val episodes), "
          f"{summary['train_seconds']} s -> {summary['checkpoint']}")
    return 0


def cmd_import_checkpoint(args) -> int:
    from harness.import_reference import import_checkpoint

    p = _protocol(args)
    source = Path(args.file)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}.{args.reference}-harness.pt")
    head, backbone = import_checkpoint(args.reference, source, p, out)
    print(f"head checkpoint: {head}")
    if backbone:
        print(f"backbone weights: {backbone}")
        print(f"evaluate: fsv-bench run --protocol {args.protocol} --method {args.reference} --checkpoint {head} --set backbone.weights={backbone}")
    return 0


def cmd_splits(args) -> int:
    from harness.data.manifests import cmd_splits_verify

    return cmd_splits_verify(args.folder, args.split)


def cmd_compare(args) -> int:
    from harness.compare import cmd_compare as compare

    return compare(args)


def cmd_leaderboard(args) -> int:
    from harness.leaderboard import cmd_leaderboard as leaderboard

    return leaderboard(args)


def cmd_perf(args) -> int:
    from harness.perf import cmd_perf as perf

    if not 0 <= args.load <= 16:
        raise HarnessError(f"--load must be between 0 and 16 busy processes, got {args.load}", where="--load", fix="give e.g. --load 2 (two busy processes on a 2-core machine)")
    return perf(args)


def cmd_calibrate(args) -> int:
    from harness.calibrate import cmd_calibrate as calibrate

    return calibrate(args)


def cmd_check_method(args) -> int:
    from harness.conformance import check_method
    from harness.pipeline import pick_device

    report = check_method(args.method, _head_settings(args.set), _feature_shape(args.feature_shape), args.seed, pick_device(args.device))
    print(report.text())
    return 0 if report.ok else 1


def _head_settings(items: list[str]) -> dict:
    """`--set KEY=VALUE` of check-method: head settings, each value read as YAML (`dim=8`, `temporal_set=[2,3]`)."""
    from harness.protocol import parse_yaml

    settings = {}
    for item in items:
        key, equals, raw = item.partition("=")
        if not equals or not key.strip():
            raise HarnessError(f"'{item}' is not of the form setting=value", where="--set", fix="write e.g. --set dim=8 (a setting of the head's constructor)")
        settings[key.strip()] = parse_yaml(raw, f"--set {key.strip()}") if raw.strip() else ""
    return settings


def _feature_shape(text: str) -> tuple[int, ...]:
    sizes = text.replace("x", ",").split(",")
    if len(sizes) != 4 or not all(s.strip().isdigit() and int(s) >= 1 for s in sizes):
        raise HarnessError(f"'{text}' is not four sizes C,T,H,W of a backbone map", where="--feature-shape", fix="write e.g. --feature-shape 16,3,1,2 (channels, time steps, height, width)")
    return tuple(int(s) for s in sizes)


def cmd_list(args) -> int:
    import methods
    from harness.backbones import list_backbones
    from harness.protocol import list_protocols
    from methods.external import load_all

    broken = load_all()  # installed plug-ins that cannot be loaded: each is named, the others listed as usual
    known = methods.list_methods()
    print("methods:   " + ", ".join(known + [f"{name} (cannot be loaded: see below)" for name, _ in broken if name not in known]))
    for name, problem in broken:
        print(f"  {name}: {problem}")
    print("backbones: " + ", ".join(list_backbones()))
    print("protocols: " + ", ".join(list_protocols()))
    return 0


def _check_episodes(n: int) -> int:
    if n < 1:
        raise HarnessError(f"{n} episodes would evaluate nothing", where="--episodes", fix="pass --episodes N with N >= 1, or leave --episodes out for the full count")
    return n


def _check_batch_episodes(n: int) -> int:
    if n < 1:
        raise HarnessError(f"{n} episodes per batch cannot score anything", where="--batch-episodes", fix="pass --batch-episodes N with N >= 1 (default: 1000; it never changes a prediction)")
    return n


def _check_workers(n: int) -> int:
    if n < 0:
        raise HarnessError(f"{n} worker processes: a count cannot be negative", where="--workers", fix="pass --workers 0 (decode in the main process) or a positive number of processes")
    most = max(16, 4 * (os.cpu_count() or 1))  # each is a process with its own copy of PyTorch
    if n > most:
        raise HarnessError(f"{n:,} worker processes is more than {most}, the most for this machine's {os.cpu_count()} CPU cores (4 per core, and 16 in any case)", where="--workers",
                           fix=f"pass --workers N with N <= {most}; decoding rarely gains beyond one per core")
    return n


def _check_device(name: str) -> str:
    """`name` when this machine has that device: auto, cpu, cuda, or cuda:N with N below the number of GPUs."""
    if not re.fullmatch(r"auto|cpu|cuda(:(0|[1-9][0-9]*))?", name):
        raise HarnessError(f"unknown device '{name}'", where="--device", fix="use auto, cpu, cuda or cuda:N (N: a GPU index from 0)")
    import torch

    from harness.pipeline import pick_device

    device = pick_device(name)  # refuses a CUDA device where PyTorch sees none
    count = torch.cuda.device_count()
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise HarnessError(f"there is no GPU {name}: PyTorch sees {count} (cuda:0 to cuda:{count - 1})", where="--device", fix=f"use --device cuda:N with N below {count}, or --device cuda")
    return name


def _check_interval(level: str) -> str:
    if level not in ("episodes", "videos", "classes"):  # harness.uncertainty.LEVELS, without importing numpy here
        raise HarnessError(f"unknown interval '{level}'", where="--interval",
                           fix="use episodes (this pool of test videos: the papers' ±), videos (new videos of the same classes) or classes (new classes)")
    return level


@dataclass(frozen=True)
class Common:
    """An option that may come before or after the command's name; a command that does not use it refuses it."""

    flag: str
    help: str
    default: object = None
    type: Callable[[str], object] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False  # takes no value (store_true)
    path: bool = False  # values that name the same absolute path agree
    check: Callable[[object], object] | None = None  # returns a given value, or raises HarnessError

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def before_dest(self) -> str:
        """Where the main parser keeps the value given before the command (the command's parser keeps `dest`)."""
        return f"{self.dest} (before the command)"

    def same(self, a, b) -> bool:
        return os.path.abspath(a) == os.path.abspath(b) if self.path else a == b


COMMON = (
    Common("--home", "data home for datasets, features and checkpoints (default: $FSV_HOME or ./.fsv)", metavar="DIR", path=True),
    Common("--results", "results folder (default: ./results)", default="results", metavar="DIR", path=True),
    Common("--device", "auto, cpu, cuda or cuda:N (default: auto)", default="auto", metavar="DEVICE", check=_check_device),
    Common("--workers", "DataLoader worker processes for decoding clips (default: 0)", default=0, type=int, metavar="N", check=_check_workers),
    Common("--batch-episodes", "episodes scored per batch; never changes a prediction (default: 1000)", default=1000, type=int, metavar="N", check=_check_batch_episodes),
    Common("--episodes", "evaluate only the first N episodes of the protocol (default: all)", type=int, metavar="N", check=_check_episodes),
    Common("--quiet", "no progress bars", default=False, switch=True),
    Common("--precision", "backbone arithmetic when extracting features (bf16: mixed precision for GPUs, cached apart; on CPUs without bf16 units it is far slower)", default="fp32", choices=("fp32", "bf16")),
    Common("--decode", "where JPEG frames are decoded and clips resized when features are extracted: auto (on the GPU when the backbone runs on one; "
           "those features are cached apart, as nvJPEG may round a pixel otherwise) or cpu (in the loader workers)", default="auto", choices=("auto", "cpu")),
    Common("--interval", "the 95%% interval shown first beside the mean: episodes (this pool of test videos; the papers' ±), videos (new videos of the "
           "same classes; the default) or classes (new classes); the papers' ± is always shown too", default="videos", metavar="LEVEL", check=_check_interval),
    Common("--recompute", "ignore what is on disk for this run: embed the scored videos' features again and score every episode again (the dataset, pretrained backbone weights and trained checkpoints are kept)", default=False, switch=True),
)
_EVERY = tuple(o.flag for o in COMMON)

#: the common options each command uses; it refuses the others
USES: dict[str, tuple[str, ...]] = {
    "quickstart": _EVERY,
    "synth": ("--workers", "--quiet"),
    "pretrain": ("--home", "--workers", "--quiet"),  # pretraining runs on the CPU
    "run": _EVERY,
    "train": ("--home", "--device", "--workers", "--batch-episodes", "--quiet", "--precision", "--decode", "--recompute"),
    "import-checkpoint": (),
    "splits verify": (),
    "compare": ("--results",),
    "leaderboard": ("--results", "--interval"),
    "perf": ("--home", "--device", "--workers", "--episodes"),
    "calibrate": ("--home", "--device", "--workers", "--batch-episodes", "--episodes", "--quiet", "--precision", "--decode", "--recompute"),
    "list": (),
    "check-method": ("--device",),
}

#: help of a common option where one command gives it another meaning
HELP = {
    ("quickstart", "--episodes"): "episodes per protocol in the quickstart (default: the protocols' 10000)",
    ("quickstart", "--recompute"): "embed every video again, train every method again from step 0 and score every episode again (the dataset and the pretrained backbone are kept)",
    ("synth", "--workers"): "processes writing videos (default: 0, which means up to 2)",
    ("train", "--batch-episodes"): "validation episodes scored per batch; never changes a prediction (default: 1000)",
    ("train", "--recompute"): "embed the train and val videos again and start the training again from step 0 instead of continuing or keeping it",
    ("perf", "--home"): "data home; perf keeps its synthetic videos in <home>/perf (default: $FSV_HOME or ./.fsv)",
    ("perf", "--workers"): "DataLoader worker processes of the end-to-end comparison (default: 0)",
    ("perf", "--episodes"): "episodes per comparison (default: 10000; --quick: 1000)",
    ("calibrate", "--home"): "data home; calibrate keeps its pools and their runs in <home>/calibration (default: $FSV_HOME or ./.fsv)",
    ("calibrate", "--episodes"): "episodes scored on each pool (default: the protocol's)",
    ("calibrate", "--recompute"): "embed every pool's videos again and score every pool again (the pools' videos, backbone weights and trained checkpoints are kept)",
}


def _add_common(parser: argparse.ArgumentParser, command: str, before: bool = False) -> None:
    """Give `parser` every common option, shown in its help only where `command` uses it. Nothing is stored for
    an option not given (no default), so a value given on one side of the command is never overwritten by the
    other side's default; `resolve_common` merges both sides and fills the defaults."""
    for o in COMMON:
        shown = HELP.get((command, o.flag), o.help) if o.flag in USES[command] else argparse.SUPPRESS
        kwargs = {"action": "store_true"} if o.switch else {"type": o.type, "metavar": o.metavar, "choices": o.choices}
        parser.add_argument(o.flag, dest=o.before_dest if before else o.dest, default=argparse.SUPPRESS, help=shown, **kwargs)


def _label(command: str) -> str:
    return "the quickstart (`fsv-bench` with no command)" if command == "quickstart" else f"`fsv-bench {command}`"


def resolve_common(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with one value per common option: the one given before the command or after it (both: they must
    agree), checked, or the default when neither was given. An option the command does not use is refused."""
    command = args.command_name
    for o in COMMON:
        before = vars(args).pop(o.before_dest, _UNSET)
        after = vars(args).pop(o.dest, _UNSET)
        if before is not _UNSET and after is not _UNSET and not o.same(before, after):
            raise HarnessError(f"given twice with different values: {before} before `{command}` and {after} after it", where=o.flag, fix=f"give {o.flag} once, before or after the command")
        value = before if after is _UNSET else after
        if value is _UNSET:
            setattr(args, o.dest, o.default)
            continue
        if o.flag not in USES[command]:
            takes = ", ".join(USES[command]) or "none of the common options"
            raise HarnessError(f"not used by {_label(command)}", where=o.flag, fix=f"leave {o.flag} out; {_label(command)} takes {takes}")
        setattr(args, o.dest, o.check(value) if o.check else value)
    return args


COMMON_EPILOG = (
    "The common options (--home, --results, --device, --workers, --batch-episodes, --episodes, --quiet, --precision, "
    "--interval, --recompute) may come before or after the command: `fsv-bench --home X run ...` is `fsv-bench run --home X ...`. "
    "Given in both places, the two values must agree, or the command is refused. A command refuses a common option "
    "it does not use (`fsv-bench COMMAND --help` lists the ones it takes)."
)


def build_parser(prog: str = "fsv-bench") -> argparse.ArgumentParser:
    """`prog` is how the user calls it, for usage lines: `fsv-bench`, `python bench.py` or `python -m harness`."""
    parser = argparse.ArgumentParser(prog=prog, description="Few-shot video classification benchmark harness. With no command: the quickstart.", epilog=COMMON_EPILOG)
    _add_common(parser, "quickstart", before=True)
    parser.set_defaults(func=cmd_quickstart, command_name="quickstart")
    sub = parser.add_subparsers(dest="command")

    def command(name: str, help: str, func, key: str | None = None) -> argparse.ArgumentParser:
        """A subcommand parser with the common options; `key` names it in USES (default: `name`)."""
        cmd = sub.add_parser(name, help=help, epilog=COMMON_EPILOG)
        _add_common(cmd, key or name)
        cmd.set_defaults(func=func, command_name=key or name)
        return cmd

    synth = command("synth", "write the embedded synthetic benchmark to a folder", cmd_synth)
    synth.add_argument("--out", required=True, help="folder to write <class>/<video>/<frame>.jpg and the split files into")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--videos-per-class", type=int, default=30)
    synth.add_argument("--frames", type=int, default=16)
    synth.add_argument("--size", type=int, default=64)

    def with_protocol(name: str, help: str, func):
        cmd = command(name, help, func)
        cmd.add_argument("--protocol", required=True, help="a protocol file, or the name of a shipped one (see `list`)")
        cmd.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a protocol field, e.g. --set dataset.root=/data/hmdb51")
        return cmd

    with_protocol("pretrain", "train a backbone that has no published weights (tiny3d) on the train split", cmd_pretrain)
    run = with_protocol("run", "evaluate methods on a protocol's test episodes", cmd_run)
    run.add_argument("--method", required=True, action="append", help="a registered method, or a Head class as package.module:Class (repeat for several)")
    run.add_argument("--checkpoint", help="a method checkpoint to evaluate (default: the one training selected on val)")
    train = with_protocol("train", "meta-train a method on the train split, selecting on val", cmd_train)
    train.add_argument("--method", required=True, help="a registered method with parameters (see `list`), or a Head class as package.module:Class")
    train.add_argument("--resume", action="store_true", help="continue from last.pt, and refuse to replace one of other settings (without it, the same command continues a stopped training too)")

    imp = with_protocol("import-checkpoint", "convert a checkpoint of the TRX or STAF reference code", cmd_import_checkpoint)
    imp.add_argument("--from", dest="reference", required=True, choices=["trx", "staf"], help="which reference code saved the file")
    imp.add_argument("file", help="the reference checkpoint")
    imp.add_argument("--out", help="where to write the harness checkpoint (default: beside the file)")

    splits = sub.add_parser("splits", help="published few-shot splits")
    _add_common(splits, "splits verify")  # `splits --quiet verify DIR` is refused like `splits verify DIR --quiet`
    splits_sub = splits.add_subparsers(dest="splits_command", required=True)
    verify = splits_sub.add_parser("verify", help="check split files against the published manifests; exit 1 on any difference", epilog=COMMON_EPILOG)
    _add_common(verify, "splits verify")
    verify.add_argument("folder", help="folder holding the split files (trainlist*.txt, vallist*.txt, testlist*.txt)")
    verify.add_argument("--split", help="compare with this manifest (hmdb_arn, ucf_arn, kinetics_cmn, ssv2_cmn, ssv2_otam) instead of finding it by hash")
    verify.set_defaults(func=cmd_splits, command_name="splits verify")

    cmp = command("compare", "paired comparison of methods evaluated on the same episodes", cmd_compare)
    cmp.add_argument("methods", nargs="+", metavar="METHOD", help="two or more methods with results on the protocol")
    cmp.add_argument("--protocol", required=True, help="the protocol's name (its folder under --results) or its file")
    cmp.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    cmp.add_argument("--level", choices=["episodes", "videos", "classes"], default="videos",
                     help="the level the verdict, Holm's correction and the ranking rest on: episodes (this pool of test videos), "
                     "videos (new videos of the same classes; the default) or classes (new classes)")
    cmp.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples of the videos and classes levels (default: 9999)")
    cmp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default: 0)")
    cmp.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    board = command("leaderboard", "methods x protocols from the results folder, every number with its provenance", cmd_leaderboard)
    board.add_argument("--format", choices=["rich", "md", "csv", "json", "latex", "html"], default="rich",
                       help="rich (terminal), md, csv, json, latex (a booktabs tabular for a paper) or html (one static page; with --plot it holds the picture)")
    board.add_argument("--out", metavar="FILE", help="write the table to FILE instead of the terminal")
    board.add_argument("--plot", metavar="FILE", help="FILE.svg (needs nothing) or FILE.png (needs matplotlib)")

    perf = command("perf", "speed benchmarks: harness vs per-episode pipeline, batched vs one-at-a-time heads, extraction workers", cmd_perf)
    perf.add_argument("--quick", action="store_true", help="smaller sizes: about a minute on 2 cores")
    perf.add_argument("--out", metavar="FILE.json", help="where to write the results (default: perf-full.json or perf-quick.json)")
    perf.add_argument("--quickstart", action="store_true", help="also time the quickstart, cold (in a fresh data home) and warm, with its phases (minutes)")
    perf.add_argument("--load", type=int, default=0, metavar="N", help="also score the heads while N busy processes compete for the cores (as on a shared machine), and report both")

    cal = command("calibrate", "how often each level's 95%% interval covers the accuracy of fresh pools of synthetic videos and classes", cmd_calibrate)
    cal.add_argument("--protocol", required=True, action="append", help="a synthetic protocol, file or shipped name (repeat for several: they share the pools)")
    cal.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a protocol field of every --protocol")
    cal.add_argument("--method", required=True, action="append", help="a registered method, or package.module:Class (repeat for several); a trained head needs its checkpoint, as for `run`")
    cal.add_argument("--pools", type=int, default=10, metavar="K", help="pools per level (default: 10; at least 2)")
    cal.add_argument("--level", action="append", choices=["videos", "classes"], help="which pools: new videos of the test classes, or new classes (repeat; default: both)")
    cal.add_argument("--videos-per-class", type=int, metavar="N", help="videos per class in each pool (default: as many as the protocol's split has)")
    cal.add_argument("--out", metavar="FILE.json", help="also write the table, every pool run and the pools as JSON")

    command("list", "list methods, backbones and protocols", cmd_list)

    check = command("check-method", "check that a head keeps the harness's contract: output shapes, batch invariance, determinism, "
                    "embed/forward split, checkpoint round trip, loss falls (exit 1 when one breaks)", cmd_check_method)
    check.add_argument("method", metavar="NAME", help="a registered method, or a Head class as package.module:Class")
    check.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE", help="a head setting (default: the head's own), e.g. --set dim=8")
    check.add_argument("--feature-shape", default="16,3,1,2", metavar="C,T,H,W", help="the backbone map the head is fed (default: 16,3,1,2)")
    check.add_argument("--seed", type=int, default=0, help="seed of the random maps, episodes and head weights (default: 0)")
    return parser


def _with_protocol_file(e: HarnessError, protocol) -> HarnessError:
    """An error raised where only the field is known ("field 'backbone.weights'") names the protocol file too."""
    import re

    field = re.fullmatch(r"field '([^']+)'", e.where or "")
    if field and protocol is not None:
        return HarnessError(e.what, where=protocol.where(field.group(1)), fix=e.fix)
    return e


def main(argv: list[str] | None = None, prog: str = "fsv-bench") -> int:
    """Run one command. A reader that goes away (`fsv-bench list | head -1`) ends it quietly, with the status
    141 of a Unix tool killed by SIGPIPE."""
    if not sys.stdout.isatty() and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # a log file gets results and messages in the order they came
    try:
        try:
            return _command(argv, prog)
        finally:
            sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):  # Python flushes both at exit: into nothing, without a word
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):  # not a file (a test's captured output)
                pass
        return 141


def _command(argv: list[str] | None, prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        from harness.threads import check_setting

        check_setting()  # FSV_THREADS
        return args.func(resolve_common(args))
    except HarnessError as e:
        from harness.console import labelled  # [rank r/N] in a torchrun process other than rank 0

        print(labelled(f"error: {_with_protocol_file(e, getattr(args, 'loaded_protocol', None)).message}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from harness.console import labelled

        print(labelled("interrupted: finished chunks are kept; the same command resumes"), file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
