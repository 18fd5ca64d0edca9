#!/usr/bin/env python3
"""Deploy tool for the image classifier's InferenceService (see `make help` and docs/DEPLOY.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from isvctl.cli import main

if __name__ == "__main__":
    sys.exit(main())
