#!/usr/bin/env bash
# Installs the Debian packages and the npm modules Tollgate needs, only when something is
# missing, so `make run` and `make test` work on a fresh Debian machine.
set -euo pipefail
pkgs=(build-essential pkg-config libjansson-dev libsqlite3-dev libssl-dev
      libcurl4-openssl-dev libpq-dev libcmocka-dev sqlite3 nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# A machine may carry Node from elsewhere: accept any node >= 20 with npm instead of Debian's.
if command -v node >/dev/null && command -v npm >/dev/null &&
   [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
want=()
for p in "${missing[@]}"; do [ -n "$p" ] && want+=("$p"); done
if [ ${#want[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: ${want[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${want[@]}" >/dev/null
fi
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$here/tests/e2e/package.json" ] && [ ! -d "$here/tests/e2e/node_modules/stripe" ]; then
  (cd "$here/tests/e2e" && npm ci --no-audit --no-fund --silent 2>/dev/null ||
                           npm install --no-audit --no-fund --silent)
fi
