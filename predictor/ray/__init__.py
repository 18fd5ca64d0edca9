"""The predictor as Ray Serve replicas: the same model, batcher, codec and hardened server, placed
and restarted by Ray, locally (`python -m predictor --ray_replicas N`, `serve run`) or on KubeRay.

Only `config` is imported without the `ray` extra; every other module here needs `ray[serve]`.
"""
