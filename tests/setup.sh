#!/usr/bin/env bash
# What the test suite needs on a fresh machine, installed when missing: the project with
# its test extras; Debian's Chromium (Playwright drives it) and Node's npm; and, from npm,
# the web SDKs the browser tests load (tests/browser/package.json).
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet -e '.[test]'

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -f tests/browser/node_modules/@segment/analytics-next/package.json ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
