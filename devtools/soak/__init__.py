"""The bounded overload-and-soak run behind `make soak` and `scripts/soak.py`.

- `phases`: closed-loop v1 load for a fixed time, and the soak phase's memory sampling;
- `checks`: the pass/fail verdict on what the phases saw;
- `cli`: flags, the server it starts (or the one it is pointed at), the report.
"""
