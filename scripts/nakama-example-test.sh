#!/usr/bin/env bash
# The Nakama example module (examples/nakama): type-checked with tsc against the project's own
# typings, compiled, and exercised by its Node test against a real gameye-bridge. Skipped with a
# notice when node or npm is missing; after the first `npm ci` it needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "nakama example: node or npm not found, skipped (install Node.js 20+ to run it)"
  exit 0
fi

cargo build --quiet -p gameye-bridge --bin gameye-bridge
bridge_bin="$PWD/target/debug/gameye-bridge"

cd examples/nakama
# npm ci only when node_modules does not match the lock file, so later runs work offline.
if ! cmp -s package-lock.json node_modules/.installed-package-lock.json 2>/dev/null; then
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.installed-package-lock.json
fi
node_modules/.bin/tsc -p tsconfig.json --noEmit
node_modules/.bin/tsc -p tsconfig.json
GAMEYE_BRIDGE_BIN="$bridge_bin" node --test test/
