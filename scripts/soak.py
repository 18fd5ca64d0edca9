#!/usr/bin/env python
"""Bounded overload-and-soak run (`make soak`); `python scripts/soak.py --help` for the phases and flags.

The program is `devtools.soak`, installed into the dev venv by `make install`."""

import sys

if __name__ == "__main__":
    from devtools.soak.cli import main

    sys.exit(main())
