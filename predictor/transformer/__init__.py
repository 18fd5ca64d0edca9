"""The transformer role: decode and crop images on the CPU in front of a GPU predictor, coalesce
concurrent requests into multi-image predictor calls over gRPC, and carry each status back.

`python -m predictor.transformer --predictor_host HOST[:PORT] --model_dir DIR` (see `__main__`).
"""
