#!/usr/bin/env python
"""fsv-bench command line: `python bench.py` runs the quickstart; `python bench.py --help` lists the rest."""
import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python bench.py"))
