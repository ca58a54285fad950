"""The command line. `python bench.py` with no arguments runs the quickstart."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from harness.errors import HarnessError


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
    )


def _protocol(args):
    from harness.backbones import list_backbones
    from harness.protocol import find_protocol, load_protocol

    p = load_protocol(find_protocol(args.protocol), args.set)
    args.loaded_protocol = p  # errors from deeper down that name a field are told which file set it
    if p.backbone.name not in list_backbones():  # before any video is indexed or embedded
        raise HarnessError(f"unknown backbone '{p.backbone.name}'", where=p.where("backbone.name"), fix=f"use one of: {', '.join(list_backbones())}")
    return p


def _check_methods(names: list[str]) -> None:
    import methods

    known = methods.list_methods()
    for name in names:
        if name not in known:
            raise HarnessError(f"unknown method '{name}'", where="--method", fix=f"use one of: {', '.join(known)} (or register your own in methods/)")


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

    quickstart(_settings(args), episodes=args.episodes)
    return 0


def cmd_synth(args) -> int:
    from harness.data.synthetic import SyntheticSpec
    from harness.pipeline import generate_synthetic

    spec = SyntheticSpec(seed=args.seed, videos_per_class=args.videos_per_class, frames=args.frames, size=args.size)
    started = time.perf_counter()
    root = generate_synthetic(Path(args.out), spec, False if args.quiet else None, workers=args.workers or min(2, os.cpu_count() or 1))
    print(f"synthetic benchmark in {root} ({time.perf_counter() - started:.1f} s)")
    return 0


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
        print_summaries(summaries)
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
        print(f"evaluate: python bench.py run --protocol {args.protocol} --method {args.reference} --checkpoint {head} --set backbone.weights={backbone}")
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

    return perf(args)


def cmd_list(args) -> int:
    import methods
    from harness.backbones import list_backbones
    from harness.protocol import list_protocols

    print("methods:   " + ", ".join(methods.list_methods()))
    print("backbones: " + ", ".join(list_backbones()))
    print("protocols: " + ", ".join(list_protocols()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="data home for datasets, features and checkpoints (default: $FSV_HOME or ./.fsv)")
    common.add_argument("--results", default="results", help="results folder (default: ./results)")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    common.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for decoding clips (default: 0)")
    common.add_argument("--batch-episodes", type=int, default=1000, help="episodes scored per batch; never changes a prediction")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="backbone arithmetic when extracting features (bf16: mixed precision for GPUs, cached apart; on CPUs without bf16 units it is far slower)")
    common.add_argument("--recompute", action="store_true", help="score episodes again even when the same run's results exist (train: start again from step 0)")

    parser = argparse.ArgumentParser(prog="bench.py", description="Few-shot video classification benchmark harness. With no command: the quickstart.", parents=[common])
    parser.add_argument("--episodes", type=int, default=None, help="episodes per protocol in the quickstart (default: the protocols' 10000)")
    sub = parser.add_subparsers(dest="command")

    synth = sub.add_parser("synth", help="write the embedded synthetic benchmark to a folder", parents=[common])
    synth.add_argument("--out", required=True, help="folder to write <class>/<video>/<frame>.jpg and the split files into")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--videos-per-class", type=int, default=30)
    synth.add_argument("--frames", type=int, default=16)
    synth.add_argument("--size", type=int, default=64)
    synth.set_defaults(func=cmd_synth)

    def with_protocol(name: str, help: str, func):
        cmd = sub.add_parser(name, help=help, parents=[common])
        cmd.add_argument("--protocol", required=True, help="a protocol file, or the name of a shipped one (see `list`)")
        cmd.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a protocol field, e.g. --set dataset.root=/data/hmdb51")
        cmd.set_defaults(func=func)
        return cmd

    with_protocol("pretrain", "train a backbone that has no published weights (tiny3d) on the train split", cmd_pretrain)
    run = with_protocol("run", "evaluate methods on a protocol's test episodes", cmd_run)
    run.add_argument("--method", required=True, action="append", help="a registered method (repeat for several)")
    run.add_argument("--episodes", type=int, default=None, help="evaluate only the first N episodes of the protocol")
    run.add_argument("--checkpoint", help="a method checkpoint to evaluate (default: the one training selected on val)")
    train = with_protocol("train", "meta-train a method on the train split, selecting on val", cmd_train)
    train.add_argument("--method", required=True, help="a registered method with parameters (see `list`)")
    train.add_argument("--resume", action="store_true", help="continue from last.pt, and refuse to replace one of other settings (without it, the same command continues a stopped training too)")

    imp = with_protocol("import-checkpoint", "convert a checkpoint of the TRX or STAF reference code", cmd_import_checkpoint)
    imp.add_argument("--from", dest="reference", required=True, choices=["trx", "staf"], help="which reference code saved the file")
    imp.add_argument("file", help="the reference checkpoint")
    imp.add_argument("--out", help="where to write the harness checkpoint (default: beside the file)")

    splits = sub.add_parser("splits", help="published few-shot splits")
    splits_sub = splits.add_subparsers(dest="splits_command", required=True)
    verify = splits_sub.add_parser("verify", help="check split files against the published manifests; exit 1 on any difference")
    verify.add_argument("folder", help="folder holding the split files (trainlist*.txt, vallist*.txt, testlist*.txt)")
    verify.add_argument("--split", help="compare with this manifest (hmdb_arn, ucf_arn, kinetics_cmn, ssv2_cmn, ssv2_otam) instead of finding it by hash")
    verify.set_defaults(func=cmd_splits)

    cmp = sub.add_parser("compare", help="paired comparison of methods evaluated on the same episodes", parents=[common])
    cmp.add_argument("methods", nargs="+", metavar="METHOD", help="two or more methods with results on the protocol")
    cmp.add_argument("--protocol", required=True, help="the protocol's name (its folder under --results) or its file")
    cmp.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    cmp.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    cmp.set_defaults(func=cmd_compare)
    board = sub.add_parser("leaderboard", help="methods x protocols from the results folder, every number with its provenance", parents=[common])
    board.add_argument("--format", choices=["rich", "md", "csv", "json"], default="rich")
    board.add_argument("--out", metavar="FILE", help="write the table to FILE instead of the terminal")
    board.add_argument("--plot", metavar="FILE", help="FILE.svg (needs nothing) or FILE.png (needs matplotlib)")
    board.set_defaults(func=cmd_leaderboard)

    perf = sub.add_parser("perf", help="speed benchmarks: harness vs per-episode pipeline, batched vs one-at-a-time heads, extraction workers", parents=[common])
    perf.add_argument("--quick", action="store_true", help="smaller sizes: about a minute on 2 cores")
    perf.add_argument("--out", metavar="FILE.json", help="where to write the results (default: perf-full.json or perf-quick.json)")
    perf.add_argument("--episodes", type=int, default=None, help="episodes per comparison (default: 10000; --quick: 1000)")
    perf.set_defaults(func=cmd_perf)

    sub.add_parser("list", help="list methods, backbones and protocols", parents=[common]).set_defaults(func=cmd_list)
    parser.set_defaults(func=cmd_quickstart)
    return parser


def _with_protocol_file(e: HarnessError, protocol) -> HarnessError:
    """An error raised where only the field is known ("field 'backbone.weights'") names the protocol file too."""
    import re

    field = re.fullmatch(r"field '([^']+)'", e.where or "")
    if field and protocol is not None:
        return HarnessError(e.what, where=protocol.where(field.group(1)), fix=e.fix)
    return e


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as e:
        print(f"error: {_with_protocol_file(e, getattr(args, 'loaded_protocol', None)).message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished chunks are kept; the same command resumes", file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
