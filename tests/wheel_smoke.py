#!/usr/bin/env python
"""The installed command line, run as a user runs it: this environment's `fsv-bench`, from a temporary folder
outside the checkout. `tox -e wheel` installs the built wheel into a fresh environment, then runs this script.

Checked, in order: the harness and its shipped protocols and split manifests come from the installed package,
not from a checkout; `--help` names the command (`fsv-bench`, `python -m harness`); `list` shows the shipped
protocols; a small synthetic benchmark (`synth`: 3 videos a class, 8 frames of 32 x 32) is pretrained on and
scored by `run` on the shipped `synthetic-5w1s` (20 episodes, its frames set to the data's with `--set`);
`splits verify` accepts that benchmark's split files and refuses an empty folder with an error, not a traceback.
Exit 0 when all hold; otherwise the failing command's output and exit 1.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

SITE = Path(sysconfig.get_path("purelib")).resolve()
FSV = shutil.which("fsv-bench", path=sysconfig.get_path("scripts"))
SMALL = ["--set", "frames.count=8", "--set", "frames.resize=32", "--set", "frames.crop=32"]
# nothing of the caller's may point the harness at a checkout or a data home
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FSV_HOME")}


def call(args: list[str], cwd: Path, expect: int = 0) -> str:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    shown = " ".join(["fsv-bench" if a == FSV else "python" if a == sys.executable else a for a in args])[:160]
    print(f"{shown}: exit {done.returncode} ({time.perf_counter() - started:.1f} s)", flush=True)
    if done.returncode != expect or "Traceback" in done.stderr:
        sys.exit(f"expected exit {expect} and no traceback\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    return done.stdout + done.stderr


def expect(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"failed: {what}")


def main() -> None:
    expect(FSV is not None, f"fsv-bench is in {sysconfig.get_path('scripts')}")
    with tempfile.TemporaryDirectory(prefix="fsv-wheel-") as tmp:
        work = Path(tmp)
        where = json.loads(call([sys.executable, "-c", "import json, harness, harness.shipped as s; "
                                 "print(json.dumps([harness.__file__, str(s.shipped_dir('protocols')), str(s.shipped_dir('splits'))]))"], work).splitlines()[-1])
        for path in map(Path, where):
            expect(SITE in path.resolve().parents, f"{path} is in the installed package ({SITE}), not in the checkout")

        expect("usage: fsv-bench" in call([FSV, "--help"], work), "`fsv-bench --help` names fsv-bench")
        expect("usage: python -m harness" in call([sys.executable, "-m", "harness", "--help"], work), "`python -m harness --help` names itself")
        listed = call([FSV, "list"], work)
        protocols = next(line for line in listed.splitlines() if line.startswith("protocols:"))
        expect({"synthetic-5w1s", "synthetic-5w5s", "hmdb-arn-5w1s"} <= set(protocols.split(":")[1].replace(",", " ").split()), f"`list` shows the shipped protocols: {protocols}")

        home, results = work / "home", work / "results"
        call([FSV, "synth", "--out", str(home / "synthetic"), "--videos-per-class", "3", "--frames", "8", "--size", "32", "--quiet"], work)
        call([FSV, "pretrain", "--protocol", "synthetic-5w1s", "--home", str(home), "--quiet", *SMALL], work)
        out = call([FSV, "run", "--protocol", "synthetic-5w1s", "--method", "protonet", "--home", str(home), "--results", str(results),
                    "--episodes", "20", "--quiet", *SMALL], work)
        summary = json.loads((results / "synthetic-5w1s" / "protonet" / "summary.json").read_text())
        expect(summary["n_episodes"] == 20 and 0 <= summary["accuracy"] <= 100, f"`run` scored 20 episodes: {out}")

        verified = call([FSV, "splits", "verify", str(home / "synthetic")], work)
        expect(verified.rstrip().endswith("byte for byte."), f"`splits verify` accepts the synthetic split files: {verified}")
        (work / "empty").mkdir()
        refused = call([FSV, "splits", "verify", str(work / "empty")], work, expect=2)
        expect(refused.startswith("error:") and "fix:" in refused, f"`splits verify` on an empty folder is one error: {refused}")
    print("the installed fsv-bench works outside the checkout")


if __name__ == "__main__":
    main()
