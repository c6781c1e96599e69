#!/usr/bin/env bash
# Build the chat node's container image from the Dockerfile (`make image`), with whichever
# builder is here: podman, buildah, or docker with a reachable engine. Says so and fails when
# there is none (the development machines have only the docker client, no engine).
#   scripts/image.sh [IMAGE]          IMAGE defaults to chat-server:dev
#   PUSH=1 scripts/image.sh IMAGE     also push it (log in to the registry first)
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-chat-server:dev}

builder=
if command -v podman >/dev/null 2>&1; then
  builder=(podman build)
  pusher=(podman push)
elif command -v buildah >/dev/null 2>&1; then
  builder=(buildah build)
  pusher=(buildah push)
elif command -v docker >/dev/null 2>&1; then
  if docker info >/dev/null 2>&1; then
    builder=(docker build)
    pusher=(docker push)
  else
    echo "image: the docker client is installed but no Docker engine answers (docker info failed); nothing built" >&2
    exit 1
  fi
fi
if [ -z "${builder:-}" ]; then
  echo "image: no container builder found (podman, buildah or docker with an engine); nothing built" >&2
  exit 1
fi

echo "image: ${builder[*]} -t $image ."
"${builder[@]}" -t "$image" .
if [ -n "${PUSH:-}" ]; then
  "${pusher[@]}" "$image"
fi
