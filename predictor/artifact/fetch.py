"""Fetching an artifact: a local directory is used in place; anything else goes through
KServe's storage module (`kserve_storage.Storage.download`), the code KServe's own storage
initializer runs.

KServe unpacks a downloaded archive itself: tar with ``filter="data"`` (absolute or ``..``
links and members outside the target are refused, leading ``/`` stripped) and zip through
``zipfile`` (which writes ``..`` or absolute names inside the target). Either way nothing
lands outside the directory it is given. That directory is a fresh staging directory inside
`model_dir`; only a complete artifact is moved out of it, so a failed or refused fetch
leaves `model_dir` as it was.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .spec import MODEL_JSON, ArtifactError

ALLOWED_STORAGE_SCHEMES: tuple[str, ...] = ("file", "s3", "gs", "http", "https")
ARCHIVE_SUFFIXES: tuple[str, ...] = (".tar.gz", ".tgz", ".tar", ".zip")


def fetch(storage_uri: str | None, model_dir: str | os.PathLike[str]) -> Path:
    """Where the artifact for `storage_uri` is on local disk, downloading it into `model_dir` if remote."""
    if not storage_uri:
        return Path(model_dir)
    scheme = urlparse(storage_uri).scheme.lower()
    if not is_remote(storage_uri):
        # Same rule as KServe: strip a file:// prefix, the rest is a path.
        local = Path(storage_uri.removeprefix("file://"))
        if local.is_dir():
            return _artifact_root(local, storage_uri)
        if not (local.is_file() and _is_archive_name(local.name)):
            raise ArtifactError(
                f"storage URI {storage_uri!r}: expected an artifact directory or archive "
                f"({', '.join(ARCHIVE_SUFFIXES)}) at {local}, found none"
            )
    elif scheme not in ALLOWED_STORAGE_SCHEMES:
        raise ArtifactError(
            f"storage URI {storage_uri!r}: scheme {scheme!r} is not allowed; expected a local path or one of "
            f"{', '.join(s + '://' for s in ALLOWED_STORAGE_SCHEMES)}"
        )
    elif scheme in ("http", "https"):
        _check_http_uri(storage_uri)
    return _download(storage_uri, Path(model_dir))


def is_remote(storage_uri: str | None) -> bool:
    """Whether `storage_uri` names storage elsewhere (s3://, gs://, http(s)://), not a local path or file://."""
    return bool(storage_uri) and urlparse(storage_uri).scheme.lower() not in ("", "file")


def _check_http_uri(storage_uri: str) -> None:
    url_path = urlparse(storage_uri).path
    if url_path.endswith(".git"):
        # KServe would `git clone` such a URI; git is not an allowed source.
        raise ArtifactError(f"storage URI {storage_uri!r}: git repositories are not allowed")
    if not _is_archive_name(url_path):
        # KServe's HTTP download fetches exactly one file; an artifact has three.
        raise ArtifactError(
            f"storage URI {storage_uri!r}: expected an http(s) URI naming an archive of the artifact "
            f"directory ({', '.join(ARCHIVE_SUFFIXES)}), got path {url_path!r}"
        )


def _storage() -> Any:
    """KServe's `Storage`, able to unpack tar archives on this Python."""
    from kserve_storage import Storage, kserve_storage

    if not hasattr(tarfile, "data_filter"):
        # KServe unpacks with extractall(filter="data") (PEP 706), which CPython has from 3.11.4
        # on; Debian bookworm's 3.11.2, the image's Python, lacks it. Its module then unpacks
        # with the maintained backport of the same tarfile.
        import backports.tarfile

        kserve_storage.tarfile = backports.tarfile
    return Storage


def _download(storage_uri: str, model_dir: Path) -> Path:
    Storage = _storage()
    model_dir.mkdir(parents=True, exist_ok=True)
    # Hidden, so that a leftover (a killed process) is never taken for part of the artifact.
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=model_dir))
    try:
        try:
            Storage.download(storage_uri, str(staging))
        except Exception as e:  # KServe raises bare Exception/RuntimeError for most failures
            cause = f" ({e.__cause__})" if e.__cause__ is not None else ""
            raise ArtifactError(f"storage URI {storage_uri!r}: download into {model_dir} failed: {e}{cause}") from e
        _artifact_root(staging, storage_uri)  # complete, or refused before anything moves
        for entry in _visible_entries(staging):
            _replace(entry, model_dir / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _artifact_root(model_dir, storage_uri)


def _replace(source: Path, destination: Path) -> None:
    # A fetch replaces what an earlier one left under the same name.
    if destination.is_dir() and not destination.is_symlink():
        shutil.rmtree(destination)
    elif destination.exists() or destination.is_symlink():
        destination.unlink()
    os.replace(source, destination)


def _is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _visible_entries(directory: Path) -> list[Path]:
    # Archive tools add clutter (._* AppleDouble files, __MACOSX) that is not part of an artifact.
    return sorted(p for p in directory.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX")


def _artifact_root(directory: Path, storage_uri: str) -> Path:
    """`directory`, or its single subdirectory, whichever holds model.json."""
    if (directory / MODEL_JSON).is_file():
        return directory
    entries = _visible_entries(directory)
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MODEL_JSON).is_file():
        return entries[0]
    raise ArtifactError(
        f"storage URI {storage_uri!r}: expected {MODEL_JSON} at the top of the artifact or in its single "
        f"top-level directory, found {[p.name for p in entries][:10]}"
    )
