#!/usr/bin/env bash
# Build the Rust reference adapter, natively and for wasm32-unknown-unknown, with Debian's
# toolchain and Debian-packaged crates only (offline, /usr/share/cargo/registry as the source).
# Usage: build.sh TARGET_DIR   -> TARGET_DIR/release/flk-rust-adapter and
#                                 TARGET_DIR/wasm32-unknown-unknown/release/flk_pcs.wasm
# Debian's /usr/bin/cargo and /usr/bin/rustc are called explicitly: a rustup toolchain earlier
# on PATH may lack the wasm32 standard library (Debian's is libstd-rust-dev-wasm32).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: build.sh TARGET_DIR}
mkdir -p "$target"
target=$(cd "$target" && pwd)  # absolute: cargo runs in the crate's directory
home="$target/cargo-home"
mkdir -p "$home"
cat > "$home/config.toml" <<CONF
[source.crates-io]
replace-with = "debian"

[source.debian]
directory = "/usr/share/cargo/registry"

[net]
offline = true
CONF
export CARGO_HOME="$home" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR="$target"
unset RUSTUP_TOOLCHAIN CARGO_BUILD_TARGET
cd "$here"
/usr/bin/cargo build --release --offline --quiet --bin flk-rust-adapter
/usr/bin/cargo build --release --offline --quiet --lib --target wasm32-unknown-unknown
