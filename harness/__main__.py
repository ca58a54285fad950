"""`python -m harness`: the command line of `fsv-bench`, for an environment whose scripts folder is not on PATH."""
import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m harness"))
