#!/usr/bin/env bash
# Install wrk (HTTP benchmarking tool, Debian package) if it is missing.
# Used by `flk bench serve`; called from `make setup`.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
echo "install_wrk: installing wrk (Debian)" >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
