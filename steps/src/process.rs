//! Child processes of steps.
//!
//! - Every step process runs in its own process group, so stopping it stops what it started
//!   too ([`kill_tree`]).
//! - Every step process gets a defined environment ([`step_env`]), never the caller's whole
//!   environment.
//! - Every step process carries its step's token (`STEPGRAPH_STEP_TOKEN`) and the engine is a
//!   child subreaper, so what a step leaves behind (even in a session of its own) is found and
//!   killed when the step ends ([`ProcessTree`]), the way Jenkins' ProcessTreeKiller works.
//! - Every step process dies with the engine, even on SIGKILL: the parent-death signal
//!   kills it, and a watchdog process kills its process group and what carries its token
//!   ([`spawn`]).
//! - Anything a step prints that ends up in an error, a log summary or the store is a bounded
//!   [`excerpt`].

use fs_err::File;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use stepgraph_engine::{ErrorContext, StepError};

/// The variable carrying a step's token into each of its processes (and, unless they clear
/// their environment, into everything they start).
pub(crate) const STEP_TOKEN_VAR: &str = "STEPGRAPH_STEP_TOKEN";

/// The caller's variables every step process gets, when they are set (besides every `LC_*`).
/// They are machine-local (where programs and the home folder are, the user's locale), so
/// they are not part of fingerprints.
pub(crate) const DEFAULT_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR"];

/// Bytes kept from each end of a long text by [`excerpt`].
pub(crate) const EXCERPT_BYTES: usize = 4096;

/// Kill a child and everything it started (it must have been spawned with `process_group(0)`).
pub(crate) fn kill_tree(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
}

// ----- bounded excerpts -----

/// Texts up to this length are kept whole by [`excerpt`] (a little over both ends, so an
/// excerpt with a short prefix is not cut again).
const KEEP_WHOLE: usize = 2 * EXCERPT_BYTES + 256;

/// A bounded excerpt of `bytes` as text: all of it when it is short (about 2 ×
/// [`EXCERPT_BYTES`]), else the first and last [`EXCERPT_BYTES`] with `… N bytes omitted …`
/// between them. Invalid UTF-8 is replaced, never an error. Control characters other than
/// newline and tab are escaped (`\x1b`, `\r`, `\u{9b}`), so a worker's terminal escape
/// sequences never reach the user's terminal through an error, an event or job_result.txt.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    if bytes.len() <= KEEP_WHOLE {
        return escape_controls(&String::from_utf8_lossy(bytes));
    }
    let head = &bytes[..EXCERPT_BYTES];
    let tail = &bytes[bytes.len() - EXCERPT_BYTES..];
    join_excerpt(head, (bytes.len() - 2 * EXCERPT_BYTES) as u64, tail)
}

/// [`excerpt`] of a file's contents, reading only its two ends (empty when unreadable).
pub(crate) fn file_excerpt(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let keep = 2 * EXCERPT_BYTES as u64;
    if len <= KEEP_WHOLE as u64 {
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        return excerpt(&buf);
    }
    let mut head = vec![0u8; EXCERPT_BYTES];
    let mut tail = vec![0u8; EXCERPT_BYTES];
    let ok = f.read_exact(&mut head).is_ok()
        && f.seek(SeekFrom::Start(len - EXCERPT_BYTES as u64)).is_ok()
        && f.read_exact(&mut tail).is_ok();
    if !ok {
        return String::new();
    }
    join_excerpt(&head, len - keep, &tail)
}

fn join_excerpt(head: &[u8], omitted: u64, tail: &[u8]) -> String {
    // Cut on character boundaries when the text is UTF-8 (at most 3 bytes move).
    let head_end = (EXCERPT_BYTES.saturating_sub(3)..=head.len())
        .rev()
        .find(|&i| std::str::from_utf8(&head[..i]).is_ok())
        .unwrap_or(head.len());
    let tail_start = (0..=3.min(tail.len()))
        .find(|&i| std::str::from_utf8(&tail[i..]).is_ok())
        .unwrap_or(0);
    let omitted = omitted + (head.len() - head_end) as u64 + tail_start as u64;
    format!(
        "{}\n… {omitted} bytes omitted …\n{}",
        escape_controls(&String::from_utf8_lossy(&head[..head_end])),
        escape_controls(&String::from_utf8_lossy(&tail[tail_start..]))
    )
}

/// `text` with every control character but newline and tab escaped: `\r`, `\x1b` for the
/// other C0 controls and DEL, `\u{9b}` for the C1 controls (a lone C1 byte is a terminal
/// command too). Escaping is idempotent: its output holds no control character.
pub(crate) fn escape_controls(text: &str) -> String {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

// ----- the defined environment -----

/// The environment of a step's processes: [`DEFAULT_ENV`] and every `LC_*` variable from the
/// caller when set, then the caller's values of the `passthrough` names that are set, then the
/// step's declared `environment_variables`, then the step's token. Nothing else of the
/// caller's environment reaches a step; callers add stepgraph's own variables on top.
pub(crate) fn step_env(
    passthrough: &[String],
    declared: &BTreeMap<String, String>,
    token: &str,
) -> BTreeMap<OsString, OsString> {
    let mut env = BTreeMap::new();
    for (k, v) in std::env::vars_os() {
        let default =
            DEFAULT_ENV.iter().any(|d| OsStr::new(d) == k) || k.as_bytes().starts_with(b"LC_");
        if default {
            env.insert(k, v);
        }
    }
    for name in passthrough {
        if let Some(v) = std::env::var_os(name) {
            env.insert(OsString::from(name), v);
        }
    }
    for (k, v) in declared {
        env.insert(OsString::from(k), OsString::from(v));
    }
    env.insert(OsString::from(STEP_TOKEN_VAR), OsString::from(token));
    env
}

// ----- spawning and reaping -----

/// Pids of step processes this process spawned and has not waited for yet; the leftover scan
/// never touches them (their `Child` handle owns their exit status).
static SPAWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Tokens of steps whose processes may still be running.
static LIVE_TOKENS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

static SUBREAPER: OnceLock<bool> = OnceLock::new();

/// Spawn a step process in a process group of its own: makes this process a child subreaper
/// first (once), so descendants orphaned by a step are re-parented here instead of to init,
/// and records the pid.
///
/// The process dies with the engine, even when the engine is killed with SIGKILL: it gets
/// `PR_SET_PDEATHSIG(SIGKILL)` ([`die_with_parent`]), and its process group is registered
/// with the [`watchdog`], which kills the group when the engine is gone. The parent-death
/// signal fires when the *thread* that spawned the child exits, so callers spawn from a
/// thread that waits for the child: the engine's job thread for commands, the worker's pool
/// thread (which stops its worker before it ends) for ParallelRunStep workers.
///
/// # Errors
/// The spawn error.
pub(crate) fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    SUBREAPER.get_or_init(|| nix::sys::prctl::set_child_subreaper(true).is_ok());
    cmd.process_group(0);
    die_with_parent(cmd);
    // Held across the spawn: a leftover scan in another thread must never see the new child
    // before it is recorded.
    let mut spawned = SPAWNED.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    if let Ok(pid) = i32::try_from(child.id()) {
        spawned.insert(pid);
        watchdog(&format!("+ {pid}"));
    }
    Ok(child)
}

/// Forget a spawned child once it has been waited for.
pub(crate) fn reaped(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        SPAWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
        watchdog(&format!("- {pid}"));
    }
}

/// Make the child get SIGKILL when the thread that spawned it exits (the engine dying
/// included), and refuse to start when the engine died between the fork and this call.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let engine = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // functions may be called. It calls prctl(PR_SET_PDEATHSIG) and getppid, both plain
    // system calls (async-signal-safe), allocates nothing and takes no lock; the error it
    // may return is built from a static string without allocating (`io::Error::from_raw_os_error`).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            // The engine died before the death signal was set: it will never come.
            if nix::unistd::getppid() != engine {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// A `/bin/sh` process, started once, that outlives the engine by design: the engine tells
/// it on its stdin which process groups of step processes are alive (`+ PGID`, `- PGID`)
/// and which step tokens are in use (`t TOKEN`, `u TOKEN`). When its stdin ends (the engine
/// exited, however it died) it kills the groups still registered, then every process whose
/// environment carries a registered token (a daemon in a session of its own).
/// `PR_SET_PDEATHSIG` kills only the direct child; this kills what it started. It stays in
/// the engine's process group (so the leftover scan, which only kills orphans of other
/// groups, never takes it for one) and ignores the terminal's signals.
const WATCHDOG_SCRIPT: &str = r#"trap '' INT TERM HUP QUIT PIPE
groups=' '
tokens=' '
while read -r op arg; do
  case $op in
    +) groups="$groups$arg " ;;
    -) case $groups in *" $arg "*) groups="${groups%% $arg *} ${groups#* $arg }" ;; esac ;;
    t) tokens="$tokens$arg " ;;
    u) case $tokens in *" $arg "*) tokens="${tokens%% $arg *} ${tokens#* $arg }" ;; esac ;;
  esac
done
for pg in $groups; do kill -s KILL -- "-$pg" 2>/dev/null; done
for pass in 1 2 3; do
  for t in $tokens; do
    for e in /proc/[0-9]*/environ; do
      if grep -qzx "STEPGRAPH_STEP_TOKEN=$t" "$e" 2>/dev/null; then
        p=${e#/proc/}; kill -s KILL "${p%/environ}" 2>/dev/null
      fi
    done
  done
done
"#;

static WATCHDOG: Mutex<Option<(Child, std::process::ChildStdin)>> = Mutex::new(None);

/// Send one line to the watchdog, starting it (again) when needed. Best effort: without a
/// watchdog, step processes still get the parent-death signal.
fn watchdog(line: &str) {
    use std::io::Write;
    let mut guard = WATCHDOG.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..2 {
        if guard.is_none() {
            let started = Command::new("/bin/sh")
                .arg("-c")
                .arg(WATCHDOG_SCRIPT)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            let Ok(mut child) = started else { return };
            let Some(stdin) = child.stdin.take() else {
                let _ = child.kill();
                let _ = child.wait();
                return;
            };
            *guard = Some((child, stdin));
        }
        if let Some((child, stdin)) = guard.as_mut() {
            if writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .is_ok()
            {
                return;
            }
            // It died (killed by hand): reap it and start another.
            let _ = child.kill();
            let _ = child.wait();
        }
        *guard = None;
    }
}

/// The processes of one step execution. Its token marks them (set by [`step_env`]); when it is
/// dropped (the step ended, failed or was aborted) every process still carrying the token,
/// and every orphan re-parented to this process, is killed and reaped.
#[derive(Debug)]
pub(crate) struct ProcessTree {
    token: String,
}

impl ProcessTree {
    /// A tree with a fresh token.
    pub(crate) fn new() -> ProcessTree {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = blake3::Hasher::new();
        h.update(&std::process::id().to_le_bytes());
        h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.update(&nanos.to_le_bytes());
        let token = h.finalize().to_hex()[..32].to_string();
        LIVE_TOKENS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone());
        watchdog(&format!("t {token}"));
        ProcessTree { token }
    }

    /// The token its processes carry in `STEPGRAPH_STEP_TOKEN`.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Kill every process left behind: those carrying this tree's token, and orphans
    /// re-parented to this process (outside this process's own group, not spawned by a step
    /// that is still running, not carrying another running step's token). Children among
    /// them are reaped with `waitpid` on their pid (never `waitpid(-1)`, which would steal
    /// the exit status of `Child` handles). Returns how many processes were killed.
    pub(crate) fn kill_leftovers(&self) -> usize {
        let me = nix::unistd::getpid().as_raw();
        let my_group = nix::unistd::getpgrp().as_raw();
        let mut killed = BTreeSet::new();
        // Each round kills what it finds; orphans of killed processes show up as our
        // children in the next one. A bounded number of rounds, in case something keeps
        // forking faster than we kill.
        for _ in 0..200 {
            let spawned = SPAWNED.lock().unwrap_or_else(|e| e.into_inner());
            let live = LIVE_TOKENS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let targets: Vec<ProcInfo> = scan_proc()
                .into_iter()
                .filter(|p| p.pid != me && !spawned.contains(&p.pid))
                .filter(|p| {
                    let ours = p.token.as_deref() == Some(self.token.as_str());
                    let other_running = p
                        .token
                        .as_ref()
                        .is_some_and(|t| *t != self.token && live.contains(t));
                    let orphan = p.ppid == me && p.pgid != my_group && !other_running;
                    ours || orphan
                })
                .collect();
            if targets.is_empty() {
                break;
            }
            let mut reaped_any = false;
            for p in &targets {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                killed.insert(p.pid);
            }
            for p in targets.iter().filter(|p| p.ppid == me) {
                let _ = nix::sys::wait::waitpid(Pid::from_raw(p.pid), None);
                reaped_any = true;
            }
            drop(spawned);
            if !reaped_any {
                // Killed, but not our children: give them a moment to die.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        killed.len()
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        self.kill_leftovers();
        LIVE_TOKENS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.token);
        watchdog(&format!("u {}", self.token));
    }
}

#[derive(Debug)]
struct ProcInfo {
    pid: i32,
    ppid: i32,
    pgid: i32,
    token: Option<String>,
}

/// Every process of /proc with its parent, group and step token (unreadable ones are skipped).
fn scan_proc() -> Vec<ProcInfo> {
    let Ok(dir) = fs_err::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs_err::read(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some(close) = stat.iter().rposition(|b| *b == b')') else {
            continue;
        };
        let rest = String::from_utf8_lossy(&stat[close + 1..]).into_owned();
        let mut fields = rest.split_ascii_whitespace();
        let _state = fields.next();
        let (Some(ppid), Some(pgid)) = (
            fields.next().and_then(|s| s.parse().ok()),
            fields.next().and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        let token = fs_err::read(entry.path().join("environ"))
            .ok()
            .and_then(|env| {
                let prefix = format!("{STEP_TOKEN_VAR}=");
                env.split(|b| *b == 0)
                    .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
        out.push(ProcInfo {
            pid,
            ppid,
            pgid,
            token,
        });
    }
    out
}

// ----- source folders -----

/// What in a Python / command step's source folder is not code, as Azure ML snapshots it:
/// `.gitignore`, `.amlignore` (and `.ignore`) are honoured; `.git`, `__pycache__` and `*.pyc`
/// (Python writes those while running) are never part of it.
pub(crate) fn source_rules() -> stepgraph_engine::SourceRules {
    stepgraph_engine::SourceRules {
        ignore_files: [".gitignore", ".amlignore", ".ignore"]
            .map(String::from)
            .to_vec(),
        skip: [".git", "__pycache__", "*.pyc"].map(String::from).to_vec(),
    }
}

/// Copy exactly the snapshot of a source folder (its
/// [`source_files`](stepgraph_engine::source_files) under [`source_rules`], the files hashed
/// into the step's fingerprint) to `to`, keeping their relative layout: steps run in a copy
/// of their snapshot, the way Azure uploads and runs one, so a step sees exactly what is
/// hashed, and nothing it writes lands in the user's folder. Only regular files are copied;
/// a special file (a fifo, a device) is never opened. `store_root` (the store, which may sit
/// inside the source folder) is never copied.
pub(crate) fn copy_source(from: &Path, to: &Path, store_root: &Path) -> Result<(), StepError> {
    let files = stepgraph_engine::source_files(from, &source_rules(), store_root)?;
    fs_err::create_dir_all(to)?;
    for f in files {
        let relative = match f.path.strip_prefix(from) {
            Ok(r) => r.to_path_buf(),
            Err(_) => stepgraph_engine::relpath::decode(&f.relative).context("")?,
        };
        let dest = to.join(&relative);
        if let Some(parent) = dest.parent() {
            fs_err::create_dir_all(parent)?;
        }
        // Its errors name the file (fs_err), so no context repeats it.
        copy_regular_file(&f.path, &dest)?;
    }
    Ok(())
}

/// Copy one regular file (links followed) with its permissions. The source is opened without
/// blocking and checked to be a regular file before it is read, so a file replaced by a fifo
/// after it was listed can never hang the copy.
fn copy_regular_file(from: &Path, to: &Path) -> std::io::Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    let mut src = fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(from)?;
    let meta = src.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{}: not a regular file",
            from.display()
        )));
    }
    let mut dest = File::create(to)?;
    std::io::copy(&mut src, &mut dest)?;
    dest.set_permissions(meta.permissions())?;
    Ok(())
}

/// Copy a file, or a folder recursively, keeping only the entries `keep` accepts.
pub(crate) fn copy_tree(
    from: &Path,
    to: &Path,
    keep: &dyn Fn(&Path) -> bool,
) -> std::io::Result<()> {
    let kind = fs_err::metadata(from)?.file_type();
    if !kind.is_dir() {
        fs_err::copy(from, to)?;
        return Ok(());
    }
    fs_err::create_dir_all(to)?;
    for entry in fs_err::read_dir(from)? {
        let path = entry?.path();
        if keep(&path) {
            if let Some(name) = path.file_name() {
                copy_tree(&path, &to.join(name), keep)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole_and_long_text_keeps_both_ends() {
        assert_eq!(excerpt(b"abc"), "abc");
        let mut long = vec![b'a'; 5000];
        long.extend(vec![b'z'; 5000]);
        let e = excerpt(&long);
        assert!(e.starts_with(&"a".repeat(4096)), "{}", &e[..10]);
        assert!(e.ends_with(&"z".repeat(4096)));
        assert!(e.contains("\n… 1808 bytes omitted …\n"), "{e}");
        assert!(e.len() < 8300);
        assert_eq!(
            excerpt(format!("prefix: {e}").as_bytes()),
            format!("prefix: {e}")
        );
    }

    #[test]
    fn excerpts_escape_terminal_control_characters() {
        let raw = b"\x1b]0;PWNED\x07\x1b[31mRED\r\n\tok \xc2\x9b2J \x7f";
        let e = excerpt(raw);
        assert_eq!(e, "\\x1b]0;PWNED\\x07\\x1b[31mRED\\r\n\tok \\u{9b}2J \\x7f");
        assert_eq!(excerpt(e.as_bytes()), e, "escaping twice changes nothing");
        let mut long = b"\x1b[2J".to_vec();
        long.extend(vec![b'.'; 20_000]);
        long.extend(b"\x1b]0;T\x07");
        let e = excerpt(&long);
        assert!(
            e.starts_with("\\x1b[2J") && e.ends_with("\\x1b]0;T\\x07"),
            "{e:.20}"
        );
        assert!(!e.chars().any(|c| c.is_control() && c != '\n'));
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("stderr.txt");
        fs_err::write(&p, b"\x1b[31mboom").expect("write");
        assert_eq!(file_excerpt(&p), "\\x1b[31mboom");
    }

    #[test]
    fn excerpt_cuts_on_character_boundaries() {
        let text = "é".repeat(6000); // 12000 bytes, 2 per character
        let e = excerpt(text.as_bytes());
        assert!(!e.contains('\u{fffd}'), "no replacement character");
        let total: usize = e.split("\n… ").next().map(str::len).unwrap_or_default();
        assert_eq!(total, 4096);
    }

    #[test]
    fn file_excerpt_reads_both_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        let mut body = b"HEAD".to_vec();
        body.extend(vec![b'.'; 100_000]);
        body.extend(b"TAIL");
        fs_err::write(&p, &body).expect("write");
        let e = file_excerpt(&p);
        assert!(e.starts_with("HEAD") && e.ends_with("TAIL"));
        assert!(e.contains(&format!("… {} bytes omitted …", body.len() - 8192)));
        assert_eq!(file_excerpt(&dir.path().join("missing")), "");
    }

    #[test]
    fn step_env_keeps_only_the_defined_variables() {
        let declared = BTreeMap::from([("MINE".to_string(), "1".to_string())]);
        let env = step_env(&["NOT_SET_ANYWHERE_XYZ".to_string()], &declared, "tok");
        assert_eq!(env.get(OsStr::new("MINE")), Some(&OsString::from("1")));
        assert_eq!(
            env.get(OsStr::new(STEP_TOKEN_VAR)),
            Some(&OsString::from("tok"))
        );
        assert!(!env.contains_key(OsStr::new("NOT_SET_ANYWHERE_XYZ")));
        for k in env.keys() {
            let k = k.to_string_lossy();
            assert!(
                DEFAULT_ENV.contains(&k.as_ref())
                    || k.starts_with("LC_")
                    || k == "MINE"
                    || k == STEP_TOKEN_VAR,
                "unexpected variable {k}"
            );
        }
    }
}
