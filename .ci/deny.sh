#!/usr/bin/env bash
# Advisories and licenses with cargo-deny, offline, against the RustSec database that ships as a
# git bundle in ../shared (the steering repository's shared/ folder beside this clone).
set -euo pipefail
cd "$(dirname "$0")/.."

bundle=../shared/rustsec-advisory-db.bundle
# cargo-deny looks for the clone of db-urls[0] under db-path, in a folder named after the URL.
db=target/advisory-dbs/advisory-db-3157b0e258782691
if [ ! -d "$db/.git" ]; then
  if [ ! -f "$bundle" ]; then
    echo "deny: $bundle is missing: cannot check advisories offline" >&2
    exit 1
  fi
  rm -rf "$db"
  mkdir -p "$(dirname "$db")"
  git clone -q "$bundle" "$db"
fi
cargo fetch -q
cargo deny --offline check advisories licenses
