#!/usr/bin/env bash
# Installs the pinned packages (package-lock.json) and runs the Node client tests against
# target/debug/graph-mailer (set GRAPH_MAILER_BIN for another binary).
set -euo pipefail
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
node --test
