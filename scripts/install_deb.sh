#!/usr/bin/env bash
# Install Debian packages if what they provide is missing.
# Usage: install_deb.sh COMMAND|/PATH "PACKAGE [PACKAGE...]" [WHAT IT IS FOR]
# COMMAND is looked up on PATH; an argument with a slash is a file or directory that must exist
# (e.g. /usr/bin/cargo when another cargo may be earlier on PATH, or a crate's doc directory).
# The one body behind scripts/install_*.sh and the tool installs of `make setup`.
set -euo pipefail
cmd=$1 pkg=$2 why=${3:-}
case "$cmd" in
  */*) if [ -e "$cmd" ]; then exit 0; fi ;;
  *) if command -v "$cmd" >/dev/null 2>&1; then exit 0; fi ;;
esac
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
echo "setup: installing $pkg (Debian)${why:+ $why}" >&2
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086  # several packages, split on spaces
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $pkg >/dev/null
