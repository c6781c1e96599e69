# syntax=docker/dockerfile:1
# The chat node's image (`make image`; docker, podman or buildah). Two stages:
#   build  — wheels of the project and of every dependency (compilers live only here, for any
#            dependency without a wheel for the target platform);
#   final  — python:3.11-slim with those wheels installed and nothing else: no compiler, no pip
#            cache, no source tree; runs as a fixed non-root UID.
# The web client (chat/web/*) and the CQL migrations (chat/store/migrations/*.cql) are package
# data of the wheel (pyproject.toml, [tool.setuptools.package-data]); tests/unit/test_dockerfile.py
# builds the wheel from exactly the files copied below and checks that they are in it.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# build-essential and libev: only for a dependency that has no wheel for this platform
# (cassandra-driver builds its libev reactor from source then). Not pinned: Debian drops old
# package versions from its mirrors, and nothing from this stage reaches the final image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libev-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chat ./chat
COPY presence ./presence
COPY discovery ./discovery
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHAT_HOST=0.0.0.0 \
    CHAT_PORT=8000 \
    CHAT_DATA_DIR=/var/lib/chat
# A fixed UID/GID (10001), so Kubernetes' runAsUser and volume ownership (fsGroup) can name it.
RUN groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid chat --home-dir /var/lib/chat --no-create-home --shell /usr/sbin/nologin chat \
    && mkdir -p /var/lib/chat \
    && chown chat:chat /var/lib/chat
# The wheels are bind-mounted from the build stage, so they never become a layer of this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/chat_server-*.whl
USER 10001:10001
WORKDIR /var/lib/chat
EXPOSE 8000
# SIGTERM drains: `reconnect` hints, a grace period for clients to leave, close 1001, exit 0.
STOPSIGNAL SIGTERM
# For `docker run`; Kubernetes uses its own probes (/readyz, /healthz) and ignores this.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["chat"]
CMD ["serve"]
