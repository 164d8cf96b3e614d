//! Compute targets: where a step runs (Azure's `compute_target`). A step runs on the local
//! machine unless it is given a [`Compute::Slurm`] target ([`Compute::slurm`]), whose settings
//! become the options of the Slurm job that runs it.
//!
//! A compute target is a resource knob: it is never part of a step's fingerprint, so a step
//! that ran locally is reused on Slurm and back.

use serde::{Deserialize, Serialize};

/// Where a step runs: on this machine (the default) or as a job on a Slurm cluster.
///
/// ```
/// use stepgraph_steps::Compute;
///
/// let hpc = Compute::slurm("hpc")
///     .partition("debug")
///     .time("01:00:00")
///     .cpus_per_task(2)
///     .mem("4G");
/// hpc.check()?;
/// assert!(Compute::from(&hpc).is_slurm());
/// assert_eq!(Compute::default(), Compute::Local);
/// # Ok::<(), stepgraph_steps::ComputeError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Compute {
    /// On this machine, as processes of the engine.
    #[default]
    Local,
    /// As a job on a Slurm cluster (`sbatch`), with these settings.
    Slurm(SlurmCompute),
}

impl Compute {
    /// A Slurm target named `name` (the name used in messages and in the spec's `compute`),
    /// with every setting left to the cluster's defaults; set them with the
    /// [`SlurmCompute`] methods.
    pub fn slurm(name: impl Into<String>) -> SlurmCompute {
        SlurmCompute {
            name: name.into(),
            partition: None,
            account: None,
            time: None,
            cpus_per_task: None,
            mem: None,
            extra_args: Vec::new(),
            bind: None,
        }
    }

    /// Whether this is a Slurm target.
    pub fn is_slurm(&self) -> bool {
        matches!(self, Compute::Slurm(_))
    }

    /// The Slurm settings, for a Slurm target.
    pub fn as_slurm(&self) -> Option<&SlurmCompute> {
        match self {
            Compute::Slurm(s) => Some(s),
            Compute::Local => None,
        }
    }

    /// Check the settings (see [`SlurmCompute::check`]); a local target is always valid.
    ///
    /// # Errors
    /// The first invalid setting.
    pub fn check(&self) -> Result<(), ComputeError> {
        match self {
            Compute::Local => Ok(()),
            Compute::Slurm(s) => s.check(),
        }
    }

    /// The target as the JSON a step records beside its declaration (never fingerprinted):
    /// `{"type": "slurm", "name": …}`; `None` for a local target.
    pub(crate) fn declared(&self) -> Option<serde_json::Value> {
        match self {
            Compute::Local => None,
            Compute::Slurm(_) => serde_json::to_value(self).ok(),
        }
    }

    /// The target a step recorded in its declaration (`ModuleDef::compute`, never fingerprinted).
    pub fn from_declared(value: Option<&serde_json::Value>) -> Compute {
        value
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }
}

impl From<SlurmCompute> for Compute {
    fn from(s: SlurmCompute) -> Self {
        Compute::Slurm(s)
    }
}

impl From<&SlurmCompute> for Compute {
    fn from(s: &SlurmCompute) -> Self {
        Compute::Slurm(s.clone())
    }
}

impl From<&Compute> for Compute {
    fn from(c: &Compute) -> Self {
        c.clone()
    }
}

/// The settings of a Slurm target: the options of the job `sbatch` submits for a step.
/// Settings left unset are the cluster's defaults. Made by [`Compute::slurm`]; each setter
/// returns the target, and [`SlurmCompute::check`] checks them (as a step's build does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlurmCompute {
    /// The target's name (the spec's `compute` key), for messages.
    pub name: String,
    /// `--partition`; the cluster's default partition when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `--time`, in Slurm's forms: `minutes`, `minutes:seconds`, `hours:minutes:seconds`,
    /// `days-hours`, `days-hours:minutes`, `days-hours:minutes:seconds`, or `UNLIMITED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `--cpus-per-task` (1 or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_task: Option<u32>,
    /// `--mem`: a whole number with an optional unit `K`, `M` (the default), `G` or `T`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// More `sbatch` arguments, passed as they are (e.g. `["--qos=high"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// Where a coordinator (a ParallelRunStep spread over nodes) listens, as the nodes reach
    /// it: `host` or `host:port`. `STEPGRAPH_BIND` overrides it; unset, the host's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
}

/// `sbatch` options that stepgraph sets itself for a step's job, so `extra_args` may not.
const RESERVED_ARGS: &[&str] = &[
    "--output",
    "-o",
    "--error",
    "-e",
    "--wait",
    "-W",
    "--parsable",
    "--wrap",
    "--chdir",
    "-D",
    "--export",
    "--job-name",
    "-J",
    "--array",
    "-a",
    "--hold",
    "-H",
    "--test-only",
];

/// `sbatch` short options that take a value: in a group (`-pdebug`), what follows one of
/// them is its value, not more options.
const SHORT_WITH_VALUE: &str = "AabBcCDdeFGiJLMmNnopqStwx";

impl SlurmCompute {
    /// Run in `partition` (`--partition`).
    pub fn partition(mut self, partition: impl Into<String>) -> Self {
        self.partition = Some(partition.into());
        self
    }

    /// Charge `account` (`--account`).
    pub fn account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }

    /// The job's time limit (`--time`), in Slurm's forms, e.g. `"01:00:00"` or `"2-00:00:00"`.
    pub fn time(mut self, time: impl Into<String>) -> Self {
        self.time = Some(time.into());
        self
    }

    /// CPUs per task (`--cpus-per-task`).
    pub fn cpus_per_task(mut self, cpus: u32) -> Self {
        self.cpus_per_task = Some(cpus);
        self
    }

    /// Memory per node (`--mem`), e.g. `"4G"` or `"500M"`.
    pub fn mem(mut self, mem: impl Into<String>) -> Self {
        self.mem = Some(mem.into());
        self
    }

    /// More `sbatch` arguments, replacing any given before (e.g. `["--qos=high"]`).
    pub fn extra_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.extra_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Where a coordinator listens, as the nodes reach it (`host` or `host:port`).
    pub fn bind(mut self, bind: impl Into<String>) -> Self {
        self.bind = Some(bind.into());
        self
    }

    /// Check the settings: a name, a partition and account that are not empty, a time in one
    /// of Slurm's forms, 1 or more CPUs, a memory size like `4G`, and extra arguments that
    /// are not empty and do not set what stepgraph sets itself (`--output`, `--error`,
    /// `--chdir`, `--export`, `--job-name`, `--wait`, `--parsable`, `--wrap`).
    ///
    /// # Errors
    /// The first invalid setting, naming its field.
    pub fn check(&self) -> Result<(), ComputeError> {
        let bad = |field: &str, message: String| {
            Err(ComputeError {
                field: field.to_string(),
                message,
            })
        };
        if self.name.is_empty() {
            return bad("name", "must not be empty".into());
        }
        for (field, value) in [("partition", &self.partition), ("account", &self.account)] {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    return bad(field, "must not be empty".into());
                }
                if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return bad(field, format!("{v:?} must not contain spaces"));
                }
            }
        }
        if let Some(t) = &self.time {
            if let Err(why) = parse_time(t) {
                return bad("time", why);
            }
        }
        if self.cpus_per_task == Some(0) {
            return bad("cpus_per_task", "must be 1 or more, got 0".into());
        }
        if let Some(m) = &self.mem {
            if let Err(why) = parse_mem(m) {
                return bad("mem", why);
            }
        }
        for (i, a) in self.extra_args.iter().enumerate() {
            let field = format!("extra_args[{i}]");
            if a.is_empty() {
                return bad(&field, "must not be empty".into());
            }
            if a.contains('\0') {
                return bad(&field, "must not contain NUL characters".into());
            }
            let option = a.split('=').next().unwrap_or(a);
            let reserved = if let Some(long) = option.strip_prefix("--") {
                // sbatch takes any unambiguous abbreviation (`--out` for `--output`).
                RESERVED_ARGS
                    .iter()
                    .filter(|r| r.starts_with("--"))
                    .find(|r| !long.is_empty() && r[2..].starts_with(long))
            } else if let Some(group) = a.strip_prefix('-') {
                // A group of short options (`-QW`): each letter up to one that takes a value.
                let mut found = None;
                for c in group.chars() {
                    found = RESERVED_ARGS
                        .iter()
                        .find(|r| r.len() == 2 && r.ends_with(c) && !r.starts_with("--"));
                    if found.is_some() || SHORT_WITH_VALUE.contains(c) {
                        break;
                    }
                }
                found
            } else {
                None
            };
            if let Some(r) = reserved {
                return bad(
                    &field,
                    format!("{a:?}: stepgraph sets {r} itself for a step's job"),
                );
            }
        }
        if let Some(b) = &self.bind {
            if b.trim().is_empty() || b.chars().any(char::is_whitespace) {
                return bad("bind", format!("{b:?}: expected host or host:port"));
            }
            if let Some((_, port)) = b.rsplit_once(':').filter(|_| !b.ends_with(']')) {
                if port.parse::<u16>().is_err() {
                    return bad(
                        "bind",
                        format!("{b:?}: the port {port:?} is not a number from 0 to 65535"),
                    );
                }
            }
        }
        Ok(())
    }

    /// The `sbatch` options of these settings: `--partition`, `--account`, `--time`,
    /// `--cpus-per-task`, `--mem`, then `extra_args`.
    pub fn sbatch_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(p) = &self.partition {
            args.push(format!("--partition={p}"));
        }
        if let Some(a) = &self.account {
            args.push(format!("--account={a}"));
        }
        if let Some(t) = &self.time {
            args.push(format!("--time={t}"));
        }
        if let Some(c) = self.cpus_per_task {
            args.push(format!("--cpus-per-task={c}"));
        }
        if let Some(m) = &self.mem {
            args.push(format!("--mem={m}"));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// A compute setting that is not valid: its field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ComputeError {
    /// The setting (`time`, `mem`, `extra_args[0]`, …).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// A Slurm time limit in seconds (`None` for no limit: `UNLIMITED`, `INFINITE`), from one of
/// Slurm's forms: `minutes`, `minutes:seconds`, `hours:minutes:seconds`, `days-hours`,
/// `days-hours:minutes`, `days-hours:minutes:seconds`.
///
/// # Errors
/// Why `s` is none of them, as a sentence.
pub(crate) fn parse_time(s: &str) -> Result<Option<u64>, String> {
    let forms = "expected minutes, minutes:seconds, hours:minutes:seconds, days-hours, \
                 days-hours:minutes or days-hours:minutes:seconds (e.g. \"01:00:00\"), or UNLIMITED";
    if matches!(s, "UNLIMITED" | "INFINITE" | "unlimited" | "infinite") {
        return Ok(None);
    }
    let wrong = || format!("{s:?}: {forms}");
    let number = |p: &str| -> Result<u64, String> {
        if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(wrong());
        }
        p.parse::<u64>().map_err(|_| wrong())
    };
    let (days, rest) = match s.split_once('-') {
        Some((d, rest)) => (Some(number(d)?), rest),
        None => (None, s),
    };
    let parts: Vec<u64> = rest.split(':').map(number).collect::<Result<_, _>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, sec]) => m * 60 + sec,
        (None, [h, m, sec]) => h * 3600 + m * 60 + sec,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, sec]) => d * 86400 + h * 3600 + m * 60 + sec,
        _ => return Err(wrong()),
    };
    Ok(Some(secs))
}

/// A Slurm memory size in MiB, from a whole number with an optional unit `K`, `M` (the
/// default), `G` or `T` (either case).
///
/// # Errors
/// Why `s` is not one, as a sentence.
pub(crate) fn parse_mem(s: &str) -> Result<u64, String> {
    let wrong = || {
        format!("{s:?}: expected a whole number with an optional unit K, M, G or T (e.g. \"4G\")")
    };
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], Some(c.to_ascii_uppercase())),
        _ => (s, None),
    };
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(wrong());
    }
    let n: u64 = digits.parse().map_err(|_| wrong())?;
    Ok(match unit {
        None | Some('M') => n,
        Some('K') => n.div_ceil(1024),
        Some('G') => n * 1024,
        Some('T') => n * 1024 * 1024,
        Some(_) => return Err(wrong()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_times_in_every_form_slurm_accepts() {
        for (t, secs) in [
            ("30", Some(1800)),
            ("30:15", Some(1815)),
            ("01:00:00", Some(3600)),
            ("2-00", Some(172_800)),
            ("1-02:03", Some(93_780)),
            ("1-02:03:04", Some(93_784)),
            ("0", Some(0)),
            ("UNLIMITED", None),
            ("INFINITE", None),
        ] {
            assert_eq!(parse_time(t), Ok(secs), "{t}");
        }
        for bad in [
            "",
            "1h",
            "01:00:00:00",
            "-1",
            "1-",
            "1-2-3",
            ":30",
            "1::2",
            "a:b",
            "1.5",
            " 30",
        ] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains("expected minutes"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn memory_sizes_with_slurm_s_units() {
        for (m, mib) in [
            ("4G", 4096),
            ("4g", 4096),
            ("500", 500),
            ("500M", 500),
            ("2048K", 2),
            ("1T", 1 << 20),
            ("0", 0),
        ] {
            assert_eq!(parse_mem(m), Ok(mib), "{m}");
        }
        for bad in ["", "G", "4GB", "4.5G", "-4G", "4 G", "4X", "four"] {
            let e = parse_mem(bad).unwrap_err();
            assert!(e.contains("expected a whole number"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn check_names_the_invalid_setting() {
        let ok = Compute::slurm("hpc")
            .partition("debug")
            .account("proj")
            .time("01:00:00")
            .cpus_per_task(2)
            .mem("4G")
            .extra_args(["--qos=high", "--exclusive"])
            .bind("login1:7000");
        assert_eq!(ok.check(), Ok(()));
        let cases = [
            (Compute::slurm(""), "name: must not be empty"),
            (
                Compute::slurm("h").partition(""),
                "partition: must not be empty",
            ),
            (
                Compute::slurm("h").partition("a b"),
                "partition: \"a b\" must not contain spaces",
            ),
            (
                Compute::slurm("h").account(" "),
                "account: must not be empty",
            ),
            (
                Compute::slurm("h").time("1h"),
                "time: \"1h\": expected minutes",
            ),
            (
                Compute::slurm("h").cpus_per_task(0),
                "cpus_per_task: must be 1 or more, got 0",
            ),
            (
                Compute::slurm("h").mem("4GB"),
                "mem: \"4GB\": expected a whole",
            ),
            (
                Compute::slurm("h").extra_args(["--qos=high", ""]),
                "extra_args[1]: must not be empty",
            ),
            (
                Compute::slurm("h").extra_args(["--output=/tmp/x"]),
                "extra_args[0]: \"--output=/tmp/x\": stepgraph sets --output itself",
            ),
            (
                Compute::slurm("h").extra_args(["-o/tmp/x"]),
                "extra_args[0]: \"-o/tmp/x\": stepgraph sets -o itself",
            ),
            (
                Compute::slurm("h").extra_args(["--out=/tmp/x"]),
                "extra_args[0]: \"--out=/tmp/x\": stepgraph sets --output itself",
            ),
            (
                Compute::slurm("h").extra_args(["-QW"]),
                "extra_args[0]: \"-QW\": stepgraph sets -W itself",
            ),
            (
                Compute::slurm("h").extra_args(["--array=1-2"]),
                "extra_args[0]: \"--array=1-2\": stepgraph sets --array itself",
            ),
            (
                Compute::slurm("h").bind("host:port"),
                "bind: \"host:port\": the port \"port\" is not a number",
            ),
        ];
        for (c, expected) in cases {
            let e = c.check().unwrap_err().to_string();
            assert!(e.starts_with(expected), "{e}\n  expected: {expected}");
        }
        // A short option's value is not more options; other long options pass.
        for ok in ["-pdebug", "--qos=high", "--exclusive", "-v"] {
            assert_eq!(Compute::slurm("h").extra_args([ok]).check(), Ok(()), "{ok}");
        }
    }

    #[test]
    fn sbatch_args_in_a_fixed_order_with_extra_args_last() {
        let c = Compute::slurm("hpc")
            .mem("4G")
            .partition("debug")
            .time("10")
            .cpus_per_task(2)
            .account("proj")
            .extra_args(["--qos=high"]);
        assert_eq!(
            c.sbatch_args(),
            [
                "--partition=debug",
                "--account=proj",
                "--time=10",
                "--cpus-per-task=2",
                "--mem=4G",
                "--qos=high"
            ]
        );
        assert!(Compute::slurm("x").sbatch_args().is_empty());
    }

    #[test]
    fn a_declared_target_reads_back_as_itself() {
        let c = Compute::from(Compute::slurm("hpc").partition("debug").mem("1G"));
        let declared = c.declared();
        assert_eq!(
            declared,
            Some(
                serde_json::json!({"type": "slurm", "name": "hpc", "partition": "debug", "mem": "1G"})
            )
        );
        assert_eq!(Compute::from_declared(declared.as_ref()), c);
        assert_eq!(Compute::Local.declared(), None);
        assert_eq!(Compute::from_declared(None), Compute::Local);
    }
}
