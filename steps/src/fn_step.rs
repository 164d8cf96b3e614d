//! `FnStep`: a Rust closure, identified by a declared version or by its own text (`fn_step!`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use stepgraph_engine::{
    BuildContext, BuildError, ModuleDef, Step, StepContext, StepCounts, StepError,
};

use crate::ports::{port_methods, StepPorts};

/// What a [`FnStep`] closure sees: input paths, output folders, parameters.
pub struct FnContext<'a> {
    ctx: &'a StepContext<'a>,
}

impl<'a> FnContext<'a> {
    /// The path of input `port` (a folder for upstream data).
    ///
    /// # Errors
    /// When the step has no such input.
    pub fn input(&self, port: &str) -> Result<&'a Path, StepError> {
        self.ctx
            .inputs
            .get(port)
            .map(|i| i.path.as_path())
            .ok_or_else(|| StepError::new(format!("no input port {port:?}")))
    }

    /// The files of input `port`, sorted by relative path.
    ///
    /// # Errors
    /// When the step has no such input.
    pub fn input_files(&self, port: &str) -> Result<Vec<PathBuf>, StepError> {
        self.ctx
            .inputs
            .get(port)
            .map(|i| i.files().iter().map(|f| f.path.clone()).collect())
            .ok_or_else(|| StepError::new(format!("no input port {port:?}")))
    }

    /// The folder to write output `port` into.
    ///
    /// # Errors
    /// When the step has no such output.
    pub fn output(&self, port: &str) -> Result<&'a Path, StepError> {
        self.ctx
            .outputs
            .get(port)
            .map(PathBuf::as_path)
            .ok_or_else(|| StepError::new(format!("no output port {port:?}")))
    }

    /// The value of pipeline parameter `name`.
    pub fn param(&self, name: &str) -> Option<&'a Value> {
        self.ctx.params.get(name)
    }

    /// The engine's context (run id, log folder, events).
    pub fn step_context(&self) -> &'a StepContext<'a> {
        self.ctx
    }
}

type StepFn = dyn Fn(&FnContext<'_>) -> Result<(), StepError> + Send + Sync;

/// A step whose body is a Rust closure.
///
/// Its code identity is either a declared version ([`FnStep::new`]: change the version when
/// you change the closure, or the cache will reuse old outputs) or the closure's own text
/// ([`fn_step!`](crate::fn_step), [`FnStep::from_source`]): editing the closure changes the
/// key, as `joblib.Memory` hashes a function's code.
#[derive(Clone)]
pub struct FnStep {
    name: String,
    version: String,
    ports: StepPorts,
    body: Arc<StepFn>,
}

impl FnStep {
    /// A step `name` running `body`, identified in the cache by `version`.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        body: impl Fn(&FnContext<'_>) -> Result<(), StepError> + Send + Sync + 'static,
    ) -> Self {
        FnStep {
            name: name.into(),
            version: version.into(),
            ports: StepPorts::default(),
            body: Arc::new(body),
        }
    }

    /// A step `name` running `body`, identified in the cache by a BLAKE3 hash of `source`, the
    /// body's text. [`fn_step!`](crate::fn_step) passes the closure's tokens
    /// (`stringify!`): any edit to the closure's code changes the key (comments and layout do
    /// not), and `explain` shows it as `code.version: "fn_step! closure tokens blake3:…"`.
    pub fn from_source(
        name: impl Into<String>,
        source: &str,
        body: impl Fn(&FnContext<'_>) -> Result<(), StepError> + Send + Sync + 'static,
    ) -> Self {
        FnStep::new(name, source_version(source), body)
    }

    /// The code identity in the fingerprint: the declared version, or `fn_step! closure
    /// blake3:<16 hex>` for a step made by [`fn_step!`](crate::fn_step).
    pub fn version(&self) -> &str {
        &self.version
    }

    port_methods!();
}

/// The version string of a closure whose text is `source`.
fn source_version(source: &str) -> String {
    format!(
        "fn_step! closure tokens blake3:{}",
        &blake3::hash(source.as_bytes()).to_hex()[..16]
    )
}

/// A [`FnStep`] whose code identity is its closure's text: `fn_step!(name, |ctx| { ... })`.
/// Editing the closure changes the step's key, so the step reruns; reformatting it or editing
/// its comments does not. (The text is the compiler's rendering of the closure's tokens, so a
/// new Rust version may render it differently and rerun such steps once.) Use
/// [`FnStep::new`] with a version to manage the identity yourself.
///
/// ```
/// use stepgraph_steps::fn_step;
///
/// let a = fn_step!("hello", |ctx| {
///     std::fs::write(ctx.output("out")?.join("hello.txt"), "hello")?;
///     Ok(())
/// });
/// let b = fn_step!("hello", |ctx| {
///     std::fs::write(ctx.output("out")?.join("hello.txt"), "hello!")?;
///     Ok(())
/// });
/// assert!(a.version().starts_with("fn_step! closure tokens blake3:"));
/// assert_ne!(a.version(), b.version());
/// ```
#[macro_export]
macro_rules! fn_step {
    ($name:expr, $body:expr $(,)?) => {
        $crate::FnStep::from_source($name, ::core::stringify!($body), $body)
    };
}

impl Step for FnStep {
    fn name(&self) -> &str {
        &self.name
    }

    fn create_module_def(&self, _context: &BuildContext) -> Result<ModuleDef, BuildError> {
        Ok(self
            .ports
            .declare(ModuleDef::builder("fn/1"), self.ports.params.clone())
            .version(self.version.clone())
            .build())
    }

    fn execute(&self, ctx: &StepContext<'_>) -> Result<StepCounts, StepError> {
        (self.body)(&FnContext { ctx })?;
        Ok(StepCounts::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closure_s_text_is_its_version() {
        let v1 = source_version("|ctx| { Ok(()) }");
        assert!(v1.starts_with("fn_step! closure tokens blake3:"), "{v1}");
        assert_eq!(v1.len(), "fn_step! closure tokens blake3:".len() + 16);
        assert_eq!(v1, source_version("|ctx| { Ok(()) }"));
        assert_ne!(v1, source_version("|ctx| { Ok(()); Ok(()) }"));
    }

    #[test]
    fn fn_step_hashes_the_closure_tokens_not_their_layout() {
        let a = crate::fn_step!("s", |_ctx| { Ok(()) });
        let b = crate::fn_step!("s", |_ctx| {
            // A comment is not code.
            Ok(())
        });
        let c = crate::fn_step!("s", |_ctx| {
            let _ = 1;
            Ok(())
        });
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
    }
}
