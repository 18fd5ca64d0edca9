# Image of the KServe predictor: `python -m predictor`, serving the artifact that KServe's storage initializer
# puts at /mnt/models (never baked in). Build with `make image`, test with `make image-test`; docs/IMAGE.md has
# the layers, the sizes and the build times.

# Debian's own Python 3.11, security-patched by Debian as the distroless Python images are. The tag is the
# rolling one on purpose: a rebuild picks up Debian's fixes. Where no registry can be reached,
# scripts/image/base.sh builds this same image from Debian's packages under this name.
FROM docker.io/library/debian:bookworm-slim AS python
# Unpinned apt packages: a rebuild takes bookworm's current security fixes, which a pin would refuse.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# --- installer: pip, used from the final stage through a mount so that it never lands in the image, and the
# lock (requirements.txt, from pyproject.toml by `make lock`) split into one file per layer.
FROM python AS installer
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/pip
COPY requirements.txt scripts/image/split_lock.py /src/
RUN python3.11 /src/split_lock.py /src/requirements.txt /locks

# --- final
FROM python AS final
LABEL org.opencontainers.image.title="image-classifier-predictor" \
      org.opencontainers.image.description="KServe custom predictor for PyTorch image classifiers" \
      org.opencontainers.image.licenses="Apache-2.0"

# g++ and Python's headers are run-time tools here: --compile's torch.compile builds kernels with them (the C++
# backend on CPU, Triton's launchers on GPU), and fails at start without them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ libpython3.11-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv --without-pip /opt/venv

# A fixed uid >= 10000 so it can never map to a host system user; Kubernetes' runAsUser uses the same id.
RUN groupadd --system --gid 10001 predictor \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/predictor \
       --shell /usr/sbin/nologin predictor

# Dependencies before source, one layer per lock file, largest and least often changed first. Each file is
# copied (not mounted) so that its content decides whether the layer below it is rebuilt; copying from the
# installer stage also keeps that stage mounted for the RUN, which buildah needs when the stage is cached. No
# pip cache, no pip in the image. pip compiles the bytecode, since the root file system is read-only at run time.
COPY --from=installer /locks/1-cuda.txt /opt/venv/requirements/
RUN --mount=type=bind,from=installer,source=/opt/pip,target=/opt/pip \
    /opt/pip/bin/pip --python /opt/venv/bin/python install --no-deps --require-hashes --only-binary :all: \
        --no-cache-dir --disable-pip-version-check --requirement /opt/venv/requirements/1-cuda.txt
COPY --from=installer /locks/2-torch.txt /opt/venv/requirements/
RUN --mount=type=bind,from=installer,source=/opt/pip,target=/opt/pip \
    /opt/pip/bin/pip --python /opt/venv/bin/python install --no-deps --require-hashes --only-binary :all: \
        --no-cache-dir --disable-pip-version-check --requirement /opt/venv/requirements/2-torch.txt
COPY --from=installer /locks/3-python.txt /opt/venv/requirements/
RUN --mount=type=bind,from=installer,source=/opt/pip,target=/opt/pip \
    /opt/pip/bin/pip --python /opt/venv/bin/python install --no-deps --require-hashes --only-binary :all: \
        --no-cache-dir --disable-pip-version-check --requirement /opt/venv/requirements/3-python.txt

# The server itself: a plain package on the venv's path, compiled like its dependencies.
COPY predictor/ /opt/venv/lib/python3.11/site-packages/predictor/
RUN /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3.11/site-packages/predictor

# The only writable paths are /tmp and ~/.cache (torch's caches; torchvision's import already creates it), so
# the pod runs with readOnlyRootFilesystem and an emptyDir on each of the two.
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

# Docker's and podman's liveness; on Kubernetes the ServingRuntime's probes take over. urllib: slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4)"]

ENTRYPOINT ["python", "-m", "predictor"]
