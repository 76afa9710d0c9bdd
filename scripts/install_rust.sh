#!/usr/bin/env bash
# Debian's Rust toolchain, its wasm32 standard library and the crates of the Rust/WASM reference
# conformance adapters (conformance/adapters/rust, built offline by its build.sh); called from `make setup`.
set -euo pipefail
here=$(dirname "$0")
why="for the Rust and WASM conformance adapters"
bash "$here/install_deb.sh" /usr/bin/cargo "rustc cargo" "$why"
bash "$here/install_deb.sh" /usr/lib/rustlib/wasm32-unknown-unknown libstd-rust-dev-wasm32 "$why"
for crate in hmac sha2 base64 serde-json; do
  bash "$here/install_deb.sh" "/usr/share/doc/librust-$crate-dev" "librust-$crate-dev" "$why"
done
