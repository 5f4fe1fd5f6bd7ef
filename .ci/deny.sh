#!/usr/bin/env bash
# cargo deny (installed from crates.io if absent): banned crates, licences
# and sources always; the RustSec advisories where their database can be
# fetched (it is not in a package registry: a machine that reaches only the
# registries says so and goes on). deny.toml records each advisory's verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deny --version >/dev/null 2>&1; then
  cargo install -q cargo-deny --locked
fi
cargo deny check bans licenses sources
if out=$(cargo deny check advisories 2>&1); then
  echo "$out" | tail -3
elif grep -q "failed to fetch advisory database" <<<"$out"; then
  echo "deny.sh: the advisory database cannot be fetched from this machine; advisories not checked here"
else
  echo "$out" >&2
  exit 1
fi
