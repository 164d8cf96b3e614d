//! The `stepgraph` binary.

fn main() {
    stepgraph_cli::main()
}
