#!/usr/bin/env bash
# Builds the Debian package: one static x86_64 binary (cargo profile `deb`: release, no debug
# info, stripped; glibc linked statically with +crt-static) and the .deb around it (cargo-deb,
# metadata in Cargo.toml [package.metadata.deb]).
#
# Usage: scripts/build-deb.sh [--no-build] [--deb-version VERSION] [--output FILE|DIR]
#   Prints the path of the .deb (default target/x86_64-unknown-linux-gnu/debian/).
#   Needs cargo-deb: cargo install cargo-deb --locked
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
PROFILE=deb
build=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0;;
    --deb-version|--output) args+=("$1" "$2"); shift;;
    *) echo "usage: $0 [--no-build] [--deb-version VERSION] [--output FILE|DIR]" >&2; exit 2;;
  esac
  shift
done

command -v cargo-deb >/dev/null || { echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 1; }

# The binary reports the package's upstream version (what the updater's probation compares with
# the installed package): --deb-version 1.5.0-1 builds a binary that says 1.5.0 (build.rs).
for ((i = 0; i < ${#args[@]}; i++)); do
  if [ "${args[i]}" = --deb-version ] && [ -z "${STOREBOX_BUILD_VERSION:-}" ]; then
    v=${args[i+1]#*:}; export STOREBOX_BUILD_VERSION=${v%-*}
  fi
done

if [ $build = 1 ]; then
  # --target keeps RUSTFLAGS away from build scripts and proc-macros (they stay dynamic).
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --locked --profile "$PROFILE" --target "$TARGET" --bin storebox >&2
fi
bin=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/$TARGET/$PROFILE/storebox
[ -x "$bin" ] || { echo "no binary at $bin (run without --no-build)" >&2; exit 1; }
# Refuse a dynamically linked binary: the package promises a static one.
if readelf -lW "$bin" | grep -q 'Requesting program interpreter\|INTERP'; then
  echo "$bin is dynamically linked; expected a static binary" >&2; exit 1
fi
cargo deb --no-build --profile "$PROFILE" --target "$TARGET" "${args[@]}"
