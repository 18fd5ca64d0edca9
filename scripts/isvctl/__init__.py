"""Deploy, canary, promote, roll back and scale the image classifier's InferenceService.

Pure logic (isvc, patches, gates, canary, manifests.customize) is separate from I/O (cluster,
prometheus, manifests.render), which sits behind small interfaces that tests replace.
"""
