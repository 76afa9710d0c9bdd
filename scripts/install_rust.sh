#!/usr/bin/env bash
# Debian's Rust toolchain, its wasm32 standard library and the crates of the Rust/WASM reference
# conformance adapters (conformance/adapters/rust, built offline by its build.sh); called from `make setup`.
# Ed25519 needs no crate beyond sha2 (SHA-512): the adapter carries its own RFC 8032 code, as
# Debian's only candidate, librust-ring-dev 0.16, compiles its Ed25519 from C, which for wasm32 needs a
# clang this setup does not install.
set -euo pipefail
here=$(dirname "$0")
why="for the Rust and WASM conformance adapters"
bash "$here/install_deb.sh" /usr/bin/cargo "rustc cargo" "$why"
bash "$here/install_deb.sh" /usr/lib/rustlib/wasm32-unknown-unknown libstd-rust-dev-wasm32 "$why"
# the wasm32 target links with rust-lld, which Debian's rustc ships as a link to lld-14 -- a package it
# only suggests, so an install without it builds natively but not for wasm32
bash "$here/install_deb.sh" /usr/bin/lld-14 lld-14 "$why"
for crate in hmac sha2 base64 serde-json; do
  bash "$here/install_deb.sh" "/usr/share/doc/librust-$crate-dev" "librust-$crate-dev" "$why"
done
