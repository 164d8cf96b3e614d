# Shared set-up of the side-by-side scripts in bench/ (sourced, not run).
#
#   bench_setup EXAMPLE TAG   builds `cargo --example EXAMPLE` in release mode into
#                             $CARGO_TARGET_DIR (default /tmp/target-bench), sets BIN to it,
#                             and DIR to a scratch folder /tmp/sg-TAG-XXXXXX removed on exit.
#   need_gnu_time             installs /usr/bin/time (GNU time, for -v) when missing.

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-bench}

bench_setup() {
  local example=$1 tag=$2
  cargo build --release --example "$example" >/dev/null 2>&1 || cargo build --release --example "$example"
  BIN=$CARGO_TARGET_DIR/release/examples/$example
  DIR=$(mktemp -d "/tmp/sg-$tag-XXXXXX")
  # shellcheck disable=SC2064 # DIR is meant to be expanded now
  trap "rm -rf '$DIR'" EXIT
}

need_gnu_time() {
  [ -x /usr/bin/time ] || apt-get install -y time >/dev/null
}

# stepgraph_release          builds the `stepgraph` binary in release mode into
#                            $CARGO_TARGET_DIR and sets BIN to it.
stepgraph_release() {
  cargo build --release -p stepgraph-cli >/dev/null 2>&1 || cargo build --release -p stepgraph-cli
  BIN=$CARGO_TARGET_DIR/release/stepgraph
}

# secs CMD ARGS...           runs CMD with its output in $DIR/last.txt (shown, and the script
#                            stopped, when it fails) and prints its wall time in seconds.
secs() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$DIR/last.txt" 2>&1 || { cat "$DIR/last.txt"; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
