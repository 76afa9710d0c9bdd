#!/usr/bin/env bash
# Install the Go toolchain (Debian package golang-go) if it is missing.
# Used by the Go reference conformance adapter (conformance/adapters/go/, standard
# library only); called from `make setup`.
exec bash "$(dirname "$0")/install_deb.sh" go golang-go "for the Go conformance adapter"
