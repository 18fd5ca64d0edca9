"""TLS from KServe's own flags: `--ssl_certfile` / `--ssl_keyfile`, or `KSERVE_TLS_CERT_FILE` /
`KSERVE_TLS_KEY_FILE` (KServe's parser reads them as the flags' defaults).

KServe's `ModelServer` serves HTTPS with them, on 8443 unless `--http_port` says otherwise;
KServe's gRPC server has no TLS, so the predictor's gRPC server takes the same pair. Both
re-read the files when they change, as cert-manager rotates them in place: REST through
KServe's `SSLCertRefresher`, gRPC through gRPC's dynamic server credentials.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass

import grpc

from .flags import FlagConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TLSConfig(FlagConfig):
    """Certificate and key, PEM files; both or neither. The flags are KServe's (`from_args` reads them)."""

    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        # KServe treats an empty value as unset, and so does an empty environment variable.
        object.__setattr__(self, "ssl_certfile", self.ssl_certfile or None)
        object.__setattr__(self, "ssl_keyfile", self.ssl_keyfile or None)
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            given, missing = (
                ("--ssl_certfile", "--ssl_keyfile") if self.ssl_certfile else ("--ssl_keyfile", "--ssl_certfile")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: TLS needs both the certificate and its key "
                "(flags, or KSERVE_TLS_CERT_FILE and KSERVE_TLS_KEY_FILE)"
            )
        if self.enabled:
            # What uvicorn and gRPC will do at start, done now: a bad pair is one clear line, not a traceback.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(self.certfile, self.keyfile)
            except (OSError, ssl.SSLError) as e:
                raise ValueError(
                    f"cannot serve TLS with certificate {self.certfile} and key {self.keyfile}: {e}"
                ) from e

    @property
    def enabled(self) -> bool:
        return self.ssl_certfile is not None

    @property
    def certfile(self) -> str:
        assert self.ssl_certfile is not None
        return self.ssl_certfile

    @property
    def keyfile(self) -> str:
        assert self.ssl_keyfile is not None
        return self.ssl_keyfile

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that pick up a new certificate and key at the next handshake after they change."""
        stamp = self._stamp()
        current = self._grpc_certificate()

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            nonlocal stamp
            now = self._stamp()
            if now == stamp:
                return None
            try:
                renewed = self._grpc_certificate()
            except OSError as e:  # half-written during a rotation: keep serving the old pair, retry next time
                logger.warning("TLS certificate changed but cannot be read yet: %s", e)
                return None
            stamp = now
            logger.info("TLS certificate reloaded for gRPC: %s", self.certfile)
            return renewed

        return grpc.dynamic_ssl_server_credentials(current, fetch)

    def _grpc_certificate(self) -> grpc.ServerCertificateConfiguration:
        with open(self.keyfile, "rb") as key, open(self.certfile, "rb") as cert:
            return grpc.ssl_server_certificate_configuration([(key.read(), cert.read())])

    def _stamp(self) -> tuple[int, ...]:
        # Followed through symlinks: a Kubernetes secret volume swaps a link, which changes the inode.
        try:
            return tuple(value for path in (self.certfile, self.keyfile) for value in _identity(os.stat(path)))
        except OSError:
            return ()


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_mtime_ns, stat.st_size
