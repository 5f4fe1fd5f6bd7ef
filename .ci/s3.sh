#!/usr/bin/env bash
# The S3-compatible server the catalog's object-store tests start: the
# Python `moto` server, from PyPI into a virtual environment under target/
# when the machine has none. Prints what to eval: eval "$(bash .ci/s3.sh)".
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v moto_server >/dev/null 2>&1; then
  exit 0
fi
v="$PWD/target/ci-moto"
if [ ! -x "$v/bin/moto_server" ]; then
  if ! python3 -m venv "$v" >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q python3-venv >/dev/null 2>&1 || \
      { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }
    python3 -m venv "$v" >/dev/null
  fi
  "$v/bin/pip" install -q 'moto[server]>=5,<6' >&2
fi
echo "export PATH=\"$v/bin:\$PATH\""
