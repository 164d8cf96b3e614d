#!/usr/bin/env bash
# What CI and the tests need beyond the Rust toolchain and python3, installed only when missing,
# so a fresh machine passes and a warm one pays nothing:
# - graphviz: the `graph --format dot` test renders with dot;
# - chromium: the `stepgraph report` page is loaded in headless chromium (cli/tests/pictures.rs),
#   which fails (never skips) in CI without it;
# - pandas: the DataFrame path of the Python harness;
# - uv: builds step environments (`environment` with requirements) in the tests/environments.rs
#   tests, which fail (never skip) in CI without it;
# - the MSRV toolchain (rust-version in Cargo.toml), for the MSRV build;
# - cargo-deny, for the advisories and licenses check.
set -euo pipefail

MSRV=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml" | head -1)

if ! command -v dot >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq graphviz >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
if ! python3 -c "import pandas" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check pandas
fi
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
if ! rustup run "$MSRV" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$MSRV" --profile minimal
fi
if ! command -v cargo-deny >/dev/null 2>&1; then
  cargo install --locked cargo-deny
fi
