#!/usr/bin/env bash
# Install wrk (HTTP benchmarking tool, Debian package) if it is missing.
# Used by `flk bench serve`; called from `make setup`.
exec bash "$(dirname "$0")/install_deb.sh" wrk wrk "for flk bench serve"
