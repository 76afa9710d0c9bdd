#!/usr/bin/env bash
# Install Debian packages if what they provide is missing.
# Usage: install_deb.sh COMMAND|/PATH|- "PACKAGE [PACKAGE...]" [WHAT IT IS FOR]
# COMMAND is looked up on PATH (and /usr/sbin); an argument with a slash is a file or
# directory that must exist (e.g. /usr/bin/cargo when another cargo may be earlier on PATH,
# or a crate's doc directory); "-" means the package provides no command (a plugin, e.g.
# rsyslog-gnutls): it is then looked up with dpkg-query.
# The one body behind scripts/install_*.sh and the tool installs of `make setup`.
set -euo pipefail
cmd=$1 pkg=$2 why=${3:-}
case "$cmd" in
  -) if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then exit 0; fi ;;
  */*) if [ -e "$cmd" ]; then exit 0; fi ;;
  *) if command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ]; then exit 0; fi ;;
esac
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
echo "setup: installing $pkg (Debian)${why:+ $why}" >&2
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
# services in packages (prometheus, rsyslog) are not started by the install: tests start their own on loopback
# shellcheck disable=SC2086  # several packages, split on spaces
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $pkg >/dev/null
