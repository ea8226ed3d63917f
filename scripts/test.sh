#!/usr/bin/env bash
# The whole test suite, as a user and CI run it. Installs redis-server and nats-server through apt
# when they are missing (the end-to-end tests start their own on free ports).
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]; }
missing=()
have redis-server || missing+=(redis-server)
have nats-server || missing+=(nats-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt-get"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Build everything once, then run all tests in parallel; nextest when present, cargo test otherwise.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi

# The Nakama example module: tsc against the project's typings, then its Node test against the bridge.
bash scripts/nakama-example-test.sh

# The emulator against Gameye's official OpenAPI document (read from ../shared, never copied).
bash scripts/conformance.sh
