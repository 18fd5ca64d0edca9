#!/usr/bin/env python
"""Classify image files with a running predictor over v1 REST, v2 REST or v2 gRPC.

    python scripts/client.py cat.jpg dog.png --url localhost:8080 --protocol v2
    python scripts/client.py cat.jpg --url localhost:8081 --protocol grpc --top_k 3

The program is `devtools.client`, installed into the dev venv by `make install`."""

import sys

if __name__ == "__main__":
    from devtools.client import main

    sys.exit(main())
