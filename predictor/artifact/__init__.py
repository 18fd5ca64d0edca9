"""The model artifact: what a directory must hold to be served, and how it is fetched and loaded safely.

Artifact format
===============

An artifact is a directory (what KServe's storage initializer puts at ``/mnt/models``)
holding three files: ``model.json``, a weights file and a labels file.

``model.json`` (schema version 1; unknown keys are an error)::

    {
      "schema_version": 1,                 # required, must be 1
      "format": "safetensors",             # required: torchscript | safetensors | state_dict
      "file": "model.safetensors",         # optional, default by format: torchscript -> model.pt,
                                           #   safetensors -> model.safetensors, state_dict -> model.pth
      "architecture": "efficientnet-lite0",# required for safetensors/state_dict (the network is built
                                           #   from code by this name); informational otherwise
      "num_classes": 1000,                 # required, >= 1; the network must output [batch, num_classes]
      "resize_size": 256,                  # required, > 0: shorter image side is resized to this (pixels)
      "crop_size": 224,                    # required, > 0 and <= resize_size: centre crop (pixels)
      "interpolation": "bilinear",         # required: bilinear | bicubic | nearest
      "mean": [0.498, 0.498, 0.498],       # required: per-channel mean of 0..1 RGB pixels
      "std": [0.502, 0.502, 0.502],        # required: per-channel std, each > 0
      "labels": "labels.txt",              # optional, default labels.txt
      "top_k": 5,                          # optional, default min(5, num_classes); 1..num_classes
      "sha256": "<64 hex digits>"          # optional: digest of the weights file, verified at load
    }

``file`` and ``labels`` are paths relative to the artifact directory (no absolute paths,
no ``..``).  The labels file is UTF-8 text, one class name per line, exactly
``num_classes`` non-empty lines, line *i* naming output *i*.

Weights formats, from safest to most capable:

* ``safetensors``: a state_dict in safetensors format; the network is built from
  ``architecture`` (see ``predictor.architectures``).  No code in the file.
* ``state_dict``: a state_dict saved with ``torch.save``; read with ``weights_only=True``.
* ``torchscript``: ``torch.jit.save`` of a traced or scripted module (any architecture).

``torch.export`` archives (``.pt2``) are not served: ``torch.export.load`` is not safe for
untrusted files (it falls back to unrestricted pickle and evaluates shape expressions).

``load_artifact`` verifies the digest when ``sha256`` is set, loads the network on CPU
in float32 and eval mode, and runs one batch of 2 zero images at ``crop_size`` to
check the output is ``[2, num_classes]``.  Every problem is an ``ArtifactError`` whose
message names the file and what was expected versus found.

Fetching: ``fetch(storage_uri, model_dir)`` accepts a local directory (used in place), a
local archive, or ``s3://``, ``gs://``, ``http(s)://`` URIs, fetched and unpacked into
``model_dir`` by KServe's storage module.  ``http(s)`` URIs must name an archive of the
artifact (``.tar.gz``, ``.tgz``, ``.tar`` or ``.zip``).  If the result is a single
subdirectory holding ``model.json``, that is the artifact.
"""

from .fetch import ALLOWED_STORAGE_SCHEMES, ARCHIVE_SUFFIXES, fetch, is_remote
from .load import Artifact, build_with_weights, file_sha256, load_artifact, read_labels, read_state_dict
from .spec import (
    DEFAULT_FILES,
    DEFAULT_LABELS_FILE,
    DEFAULT_TOP_K,
    FORMATS,
    MODEL_JSON,
    SCHEMA_VERSION,
    WEIGHTS_ONLY_FORMATS,
    ArtifactError,
    ModelSpec,
    read_spec,
)

__all__ = [
    "ALLOWED_STORAGE_SCHEMES",
    "ARCHIVE_SUFFIXES",
    "DEFAULT_FILES",
    "DEFAULT_LABELS_FILE",
    "DEFAULT_TOP_K",
    "FORMATS",
    "MODEL_JSON",
    "SCHEMA_VERSION",
    "WEIGHTS_ONLY_FORMATS",
    "Artifact",
    "ArtifactError",
    "ModelSpec",
    "build_with_weights",
    "fetch",
    "file_sha256",
    "is_remote",
    "load_artifact",
    "read_labels",
    "read_spec",
    "read_state_dict",
]
