"""Deploy, canary, promote, roll back and scale the image classifier's InferenceService.

Pure logic (isvc, workload, rollout targets, patches, scaling, gates, canary) is separate from I/O
(cluster, prometheus, manifests.render), which sits behind small interfaces that tests replace.
"""
