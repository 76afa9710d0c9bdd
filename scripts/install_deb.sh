#!/usr/bin/env bash
# Install a Debian package if the command it provides is missing.
# Usage: install_deb.sh COMMAND PACKAGE [WHAT IT IS FOR]
# The one body behind scripts/install_*.sh and the tool installs of `make setup`.
set -euo pipefail
cmd=$1 pkg=$2 why=${3:-}
if command -v "$cmd" >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
echo "setup: installing $pkg (Debian)${why:+ $why}" >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$pkg" >/dev/null
