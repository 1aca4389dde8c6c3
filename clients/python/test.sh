#!/usr/bin/env bash
# Builds a pinned virtualenv, generates the stubs from the proto and runs the Python client
# tests against target/debug/graph-mailer (set GRAPH_MAILER_BIN for another binary).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
rm -rf gen && mkdir -p gen
.venv/bin/python -m grpc_tools.protoc -I ../../proto --python_out=gen --grpc_python_out=gen graphmailer/v1/mailer.proto
.venv/bin/python -m unittest -v test_client
