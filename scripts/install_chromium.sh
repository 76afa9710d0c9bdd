#!/usr/bin/env bash
# Install Chromium (Debian package) if it is missing.
# Used by tests/lab/test_report.py to render the demo/run HTML report headless; called from `make setup`.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
echo "install_chromium: installing chromium (Debian)" >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
