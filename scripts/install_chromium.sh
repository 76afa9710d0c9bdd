#!/usr/bin/env bash
# Install Chromium (Debian package) if it is missing.
# Used by tests/lab/test_report.py to render the demo/run HTML report headless; called from `make setup`.
exec bash "$(dirname "$0")/install_deb.sh" chromium chromium "to render the HTML report headless"
