#!/usr/bin/env python
"""Benchmark the predictor (`make bench`); `python scripts/bench.py --help` for the flags.

The program is `devtools.bench`, installed into the dev venv by `make install`."""

import sys

if __name__ == "__main__":  # not when a spawned client process of the benchmark imports this file
    from devtools.bench.cli import main

    sys.exit(main())
