#!/usr/bin/env python
"""Write a model artifact from an architecture name: the command line of `predictor.export`.

    python scripts/export_model.py --output models/efficientnet-lite0
    python scripts/export_model.py --output models/resnet50 --arch resnet50 --weights resnet50.pth
    python scripts/export_model.py --output models/lite0-ts --format torchscript

`python scripts/export_model.py --help` lists every flag.
"""

import sys

from predictor.export import export, main

__all__ = ["export", "main"]

if __name__ == "__main__":
    sys.exit(main())
