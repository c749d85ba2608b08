#!/usr/bin/env bash
# Builds the Debian package: one static x86_64 binary (cargo profile `deb`: release, no debug
# info, stripped; glibc linked statically with +crt-static) and the .deb around it (cargo-deb,
# metadata in Cargo.toml [package.metadata.deb]).
#
# Usage: scripts/build-deb.sh [--no-build] [--deb-version VERSION] [--output FILE|DIR]
#   Prints the path of the .deb (default target/x86_64-unknown-linux-gnu/debian/).
#   --deb-version VERSION builds version VERSION: the package's version (cargo-deb) and the one
#   the binary reports (`storebox version`, /api/v1/…; STOREBOX_BUILD_VERSION for build.rs). It
#   reuses the build cache: only storebox itself recompiles. With --output DIR the package lands
#   there, apart from the default build's.
#   Needs cargo-deb: cargo install cargo-deb --locked
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
PROFILE=deb
build=1
version=
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0;;
    --deb-version) version=$2; args+=("$1" "$2"); shift;;
    --output) args+=("$1" "$2"); shift;;
    *) echo "usage: $0 [--no-build] [--deb-version VERSION] [--output FILE|DIR]" >&2; exit 2;;
  esac
  shift
done

command -v cargo-deb >/dev/null || { echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 1; }

if [ $build = 1 ]; then
  # --target keeps RUSTFLAGS away from build scripts and proc-macros (they stay dynamic).
  STOREBOX_BUILD_VERSION="$version" RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --locked --profile "$PROFILE" --target "$TARGET" --bin storebox >&2
fi
bin=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/$TARGET/$PROFILE/storebox
[ -x "$bin" ] || { echo "no binary at $bin (run without --no-build)" >&2; exit 1; }
# The binary must report the version the package will carry (a --no-build of another version's
# binary would not).
want=${version:-$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"name":"storebox","version":"\([^"]*\)".*/\1/p')}
got=$("$bin" version | sed 's/^storebox //')
[ -z "$want" ] || [ "$got" = "$want" ] || { echo "$bin reports version $got, the package is $want (build without --no-build)" >&2; exit 1; }
# Refuse a dynamically linked binary: the package promises a static one.
if readelf -lW "$bin" | grep -q 'Requesting program interpreter\|INTERP'; then
  echo "$bin is dynamically linked; expected a static binary" >&2; exit 1
fi
cargo deb --no-build --profile "$PROFILE" --target "$TARGET" "${args[@]}"
