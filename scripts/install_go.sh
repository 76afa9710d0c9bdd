#!/usr/bin/env bash
# Install the Go toolchain (Debian package golang-go) if it is missing.
# Used by the Go reference conformance adapter (conformance/adapters/go/, standard
# library only); called from `make setup`.
set -euo pipefail
if command -v go >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
echo "install_go: installing golang-go (Debian) for the Go conformance adapter" >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-go >/dev/null
