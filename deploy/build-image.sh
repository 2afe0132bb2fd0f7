#!/usr/bin/env bash
# Builds the Galgo image `galgo:dev` without pulling anything: a statically linked `galgo`
# (glibc, crt-static) built here, copied into an image FROM scratch.
#   deploy/build-image.sh            # then: docker compose -f deploy/compose.yaml up -d
# IMAGE=name:tag overrides the tag.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${IMAGE:-galgo:dev}"
target="x86_64-unknown-linux-gnu"
echo "building a static galgo for $target ..."
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" --bin galgo
binary="${CARGO_TARGET_DIR:-target}/$target/release/galgo"
linkage="$(ldd "$binary" 2>&1 || true)"
case "$linkage" in
  *"statically linked"*|*"not a dynamic executable"*) ;;
  *) echo "error: $binary is dynamically linked ($linkage); a FROM scratch image needs a static binary" >&2
     exit 1 ;;
esac
context="deploy/.build"
mkdir -p "$context"
cp "$binary" "$context/galgo"
strip "$context/galgo" 2>/dev/null || true
docker build --quiet -t "$image" -f deploy/Dockerfile "$context"
echo "built $image ($(du -h "$context/galgo" | cut -f1) binary)"
