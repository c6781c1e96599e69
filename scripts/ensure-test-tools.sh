#!/usr/bin/env bash
# Debian packages the test suite drives: Chromium for the browser tests (Playwright drives it;
# it never downloads a browser) and libfaketime (a node restarted with its clock behind).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || [ -n "$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null)" ] || missing+=(faketime)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages for the tests: ${missing[*]} (and this is not root to install them)" >&2
  exit 1
fi
echo "installing Debian's ${missing[*]} for the tests…"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
