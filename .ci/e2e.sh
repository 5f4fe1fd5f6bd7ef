#!/usr/bin/env bash
# The portal end to end in a real headless Chromium (e2e/portal.test.mjs):
# installs Debian's chromium and Node.js if they are absent, the test's
# npm packages from the lock file, and runs it against the debug binary
# (built by `cargo test`). Screenshots land in e2e/artifacts/.
# Usage: bash .ci/e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v node >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq "${need[@]}" >&2
fi
[ -x target/debug/gigafab ] || cargo build -q -p gigafab
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
cd e2e
GIGAFAB_BIN="$PWD/../target/debug/gigafab" CHROMIUM="$(command -v chromium)" npm test
