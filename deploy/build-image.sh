#!/usr/bin/env sh
# Build the loadgen image for deploy/ (untested here: no container runtime runs in this project's
# CI; the tests check the Dockerfile statically). Usage, from anywhere:
#   deploy/build-image.sh                     # loadgen:0.1.0 with docker
#   deploy/build-image.sh REGISTRY/loadgen:TAG
#   CONTAINER_TOOL=podman deploy/build-image.sh
#   KIND_CLUSTER=loadgen deploy/build-image.sh  # then load it into that kind cluster
# With a registry, push the image and point deploy/run/kustomization.yaml at it
# (cd deploy/run && kustomize edit set image loadgen=REGISTRY/loadgen:TAG).
set -eu
image="${1:-loadgen:0.1.0}"
tool="${CONTAINER_TOOL:-docker}"
root="$(cd "$(dirname "$0")/.." && pwd)"
# BuildKit (docker >= 23, podman) reads deploy/Dockerfile.dockerignore: only the package goes in.
"$tool" build -f "$root/deploy/Dockerfile" -t "$image" "$root"
if [ -n "${KIND_CLUSTER:-}" ]; then
  kind load docker-image "$image" --name "$KIND_CLUSTER"
fi
echo "built $image"
