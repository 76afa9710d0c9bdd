#!/usr/bin/env bash
# Install promtool/prometheus and rsyslog with its TLS driver (Debian packages) if missing.
# Used by tests/observability (alert rule tests, chaos-proved alerts, syslog-over-TLS streaming);
# called from `make setup`.
set -euo pipefail
here=$(dirname "$0")
bash "$here/install_deb.sh" promtool prometheus "for the alert rule tests (promtool)"
bash "$here/install_deb.sh" rsyslogd rsyslog "for the audit streaming tests (a real SIEM receiver)"
bash "$here/install_deb.sh" - rsyslog-gnutls "for the audit streaming tests (syslog over TLS)"
