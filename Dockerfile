# Image of the KServe predictor: `python -m predictor`, model pulled at run time into /mnt/models
# by KServe's storage initializer (never baked in). Build: `make image`.

# One pinned base for both stages: the venv's interpreter symlinks must point into the same Python.
FROM python:3.11.7-slim-bookworm AS python

# --- builder: resolves and installs every dependency into a venv that the final stage copies whole.
FROM python AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies before source: this layer is rebuilt only when pyproject.toml changes, not on every
# code edit (torch alone is several GB). The pins live in pyproject.toml's [project].dependencies.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --requirement requirements.txt

# The package itself, without re-resolving anything: its dependencies are already in the layer above.
COPY predictor/ predictor/
RUN pip install --no-deps .

# --- final: the same base, no pip cache, no compilers.
FROM python AS final
LABEL org.opencontainers.image.title="image-classifier-predictor" \
      org.opencontainers.image.description="KServe custom predictor for PyTorch image classifiers" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed uid >= 10000 so it can never map to a host system user; Kubernetes' runAsUser uses the same id.
RUN groupadd --system --gid 10001 predictor \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/predictor \
       --shell /usr/sbin/nologin predictor

COPY --from=builder /opt/venv /opt/venv

# Every writable path is under /tmp or ~/.cache, so the pod can run with readOnlyRootFilesystem and
# emptyDir volumes on exactly these two places (torch.compile and Triton write kernel caches).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/predictor \
    XDG_CACHE_HOME=/home/predictor/.cache \
    TORCH_HOME=/home/predictor/.cache/torch \
    TORCHINDUCTOR_CACHE_DIR=/home/predictor/.cache/torchinductor \
    TRITON_CACHE_DIR=/home/predictor/.cache/triton

USER 10001:10001
WORKDIR /home/predictor
EXPOSE 8080 8081

# Docker-only liveness; on Kubernetes the ServingRuntime's probes take over. urllib, since slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4)"]

ENTRYPOINT ["python", "-m", "predictor"]
