//! Workers: a hung one is killed and replaced; what one prints does not reach the protocol.

use stepgraph_engine::FileDataset;

use crate::common::Workspace;
use crate::parallel_run::support::{
    all_ok_rows, docs, output, python_entry, ran, run_docs, run_in, step, sys_log, user_logs,
    UsualSetUp,
};

#[test]
fn hung_worker_is_killed_and_replaced() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 6);
    let marker = ws.path().join("hung-once");
    let cfg = python_entry(
        ws.path(),
        "hang.py",
        r#"import os, sys, time

def run(mini_batch):
    try:
        os.close(os.open(sys.argv[2], os.O_CREAT | os.O_EXCL))
        time.sleep(30)  # the first call anywhere hangs
    except FileExistsError:
        pass
    return [os.path.basename(p) + " ok" for p in mini_batch]
"#,
    )
    .usual("2")
    .run_invocation_timeout(1)
    .run_max_try(2);
    let marker = marker.display().to_string();
    let (run, _) = run_in(
        &ws,
        step(
            cfg,
            FileDataset::from_files("docs", data),
            &["--marker", &marker],
        ),
    );
    let r = ran(&run);
    assert_eq!(output(&run), all_ok_rows(6, &[]));
    assert_eq!((r.counts.failed_items, r.counts.failed_units), (0, 0));
    let sys = sys_log(&run);
    assert!(
        sys.contains("run() did not return within run_invocation_timeout (1 s); the worker was killed and replaced"),
        "{sys}"
    );
}

// ----- 5. what a worker prints does not reach the protocol -----

#[test]
fn worker_printing_to_stdout_does_not_corrupt_results() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 7);
    let cfg = python_entry(
        ws.path(),
        "noisy.py",
        r#"import os, sys

def init():
    print("init says hello")
    os.write(1, b'{"type":"ready"}\n')

def run(mini_batch):
    print('{"type":"result","index":0,"count":999,"rows":["forged"]}')
    os.write(1, b"raw fd-1 write without newline")
    sys.stdout.write("not json at all\n")
    sys.stdout.flush()
    return [os.path.basename(p) + " ok" for p in mini_batch]
"#,
    )
    .usual("2");
    let (run, _) = run_docs(&ws, cfg, data);
    let r = ran(&run);
    assert_eq!(output(&run), all_ok_rows(7, &[]));
    assert_eq!((r.counts.items, r.counts.failed_items), (7, 0));
    let logs = user_logs(&run);
    for text in [
        "init says hello",
        "\"rows\":[\"forged\"]",
        "raw fd-1 write without newline",
        "not json at all",
    ] {
        assert!(logs.contains(text), "{text} missing from {logs}");
    }
}
