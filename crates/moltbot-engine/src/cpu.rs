//! Which llama.cpp CPU backend runs the models.
//!
//! A default build links one CPU backend compiled for x86-64-v3 (AVX2, FMA, F16C, BMI2). A `portable`
//! build (llama.cpp's `GGML_BACKEND_DL` + `GGML_CPU_ALL_VARIANTS`) instead ships one loadable module per
//! x86-64 level, `backends/libggml-cpu-<variant>.so`, and this module picks one at startup:
//!
//! - `engine.cpu_variant = "auto"` tries the variants best first. llama.cpp refuses a module whose
//!   instructions the CPU lacks; a module the CPU *claims* to support can still die with SIGILL (AMX
//!   kernels under some hypervisors do), so each candidate first runs a short generation in a child
//!   process ([`probe`], through `moltbot __cpu-probe`) and the first one that survives is loaded.
//! - `engine.cpu_variant = "<name>"` (`haswell`, `skylakex`, `x64`, …) loads exactly that module, or fails
//!   with a clear error naming the variants present.
//!
//! [`configure`] must run before the first model is loaded; without it a portable build uses `auto`
//! without child-process probes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Whether this binary loads its CPU backend at runtime (`portable` feature).
pub const PORTABLE_BUILD: bool = cfg!(feature = "portable");

/// The x86-64 variants llama.cpp builds with `GGML_CPU_ALL_VARIANTS`, best first.
pub const VARIANTS: &[&str] = &[
    "sapphirerapids",
    "zen4",
    "cooperlake",
    "icelake",
    "cascadelake",
    "cannonlake",
    "skylakex",
    "alderlake",
    "haswell",
    "piledriver",
    "ivybridge",
    "sandybridge",
    "sse42",
    "x64",
];

/// Why llama.cpp refuses a module: its `ggml_backend_score` found instructions this CPU lacks (or the
/// file is not a ggml backend at all).
pub const REFUSED: &str =
    "llama.cpp refused it (this CPU lacks its instructions, or the file is not a backend)";

/// What the built-in (non-portable) CPU backend was compiled for.
pub const BUILTIN_DESCRIPTION: &str = "built in (x86-64-v3: AVX2, FMA, F16C, BMI2)";

/// `engine.cpu_variant`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CpuVariant {
    #[default]
    Auto,
    Named(String),
}

impl CpuVariant {
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("auto") {
            CpuVariant::Auto
        } else {
            CpuVariant::Named(s.to_ascii_lowercase())
        }
    }
}

/// How to check a candidate before loading it into this process.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Trust llama.cpp's own check (CPUID) only.
    None,
    /// Run `exe args… <module path>` and require exit status 0 within `timeout`.
    Command {
        exe: PathBuf,
        args: Vec<String>,
        timeout: Duration,
    },
}

/// Where modules are looked for and which to load.
#[derive(Debug, Clone)]
pub struct CpuConfig {
    /// `engine.backends_dir`; `None` = `backends/` beside the executable, then the build's own directory.
    pub dir: Option<PathBuf>,
    pub variant: CpuVariant,
    pub probe: Probe,
}

impl Default for CpuConfig {
    fn default() -> Self {
        Self {
            dir: None,
            variant: CpuVariant::Auto,
            probe: Probe::None,
        }
    }
}

/// The outcome of the selection, for logs and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuChoice {
    /// The variant name, or [`BUILTIN_DESCRIPTION`] in a default build.
    pub variant: String,
    pub path: Option<PathBuf>,
    /// Candidates passed over, with why.
    pub skipped: Vec<(String, String)>,
}

static CONFIG: OnceLock<CpuConfig> = OnceLock::new();
static CHOICE: OnceLock<Result<CpuChoice, String>> = OnceLock::new();

/// Set the selection policy; `false` if it was already set (or a model already loaded).
pub fn configure(config: CpuConfig) -> bool {
    CONFIG.set(config).is_ok()
}

/// The CPU backend in use, once a model was loaded (or [`ensure_loaded`] ran).
pub fn choice() -> Option<&'static Result<CpuChoice, String>> {
    CHOICE.get()
}

/// Select and load the CPU backend (once per process). Called before llama.cpp is initialised.
pub fn ensure_loaded() -> Result<&'static CpuChoice, String> {
    CHOICE
        .get_or_init(|| {
            if !PORTABLE_BUILD {
                return Ok(CpuChoice {
                    variant: BUILTIN_DESCRIPTION.into(),
                    path: None,
                    skipped: Vec::new(),
                });
            }
            let config = CONFIG.get_or_init(CpuConfig::default);
            let choice = select(config)?;
            tracing::info!(
                moltbot.cpu_variant = %choice.variant,
                skipped = ?choice.skipped,
                "llama.cpp CPU backend selected"
            );
            Ok(choice)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The directory holding `libggml-cpu-*.so`: configured, else `backends/` beside the executable, else
/// where the build put them.
pub fn backends_dir(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = configured {
        return Some(dir.to_path_buf());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|p| p.join("backends")))
        .filter(|d| d.is_dir());
    beside.or_else(build_dir)
}

#[cfg(feature = "portable")]
fn build_dir() -> Option<PathBuf> {
    llama_cpp_sys_2::BACKENDS_DIR.map(PathBuf::from)
}

#[cfg(not(feature = "portable"))]
fn build_dir() -> Option<PathBuf> {
    None
}

/// The variants present in `dir`, best first.
pub fn available(dir: &Path) -> Vec<(String, PathBuf)> {
    VARIANTS
        .iter()
        .map(|v| ((*v).to_owned(), dir.join(module_file(v))))
        .filter(|(_, p)| p.is_file())
        .collect()
}

/// `libggml-cpu-<variant>.so`.
pub fn module_file(variant: &str) -> String {
    format!("libggml-cpu-{variant}{}", std::env::consts::DLL_SUFFIX)
}

fn select(config: &CpuConfig) -> Result<CpuChoice, String> {
    let dir = backends_dir(config.dir.as_deref()).ok_or_else(|| {
        "no llama.cpp CPU backend directory: set engine.backends_dir or keep backends/ beside the binary"
            .to_owned()
    })?;
    let present = available(&dir);
    if present.is_empty() {
        return Err(format!(
            "{} holds no llama.cpp CPU backend (libggml-cpu-*.so)",
            dir.display()
        ));
    }
    let names = || {
        present
            .iter()
            .map(|(v, _)| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let candidates: Vec<(String, PathBuf)> = match &config.variant {
        CpuVariant::Named(want) => {
            let Some(found) = present.iter().find(|(v, _)| v == want) else {
                return Err(format!(
                    "engine.cpu_variant = {want:?} is not in {} (present: {})",
                    dir.display(),
                    names()
                ));
            };
            vec![found.clone()]
        }
        CpuVariant::Auto => present.clone(),
    };
    let mut skipped = Vec::new();
    for (variant, path) in candidates {
        if let Err(why) = run_probe(&config.probe, &path) {
            skipped.push((variant, why));
            continue;
        }
        match load_module(&path) {
            Ok(()) => {
                return Ok(CpuChoice {
                    variant,
                    path: Some(path),
                    skipped,
                });
            }
            Err(why) => skipped.push((variant, why)),
        }
    }
    let detail = skipped
        .iter()
        .map(|(v, why)| format!("{v}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(match (&config.variant, skipped.as_slice()) {
        (CpuVariant::Named(want), [(_, why)]) => {
            format!("engine.cpu_variant = {want:?} cannot run on this machine: {why}")
        }
        _ => format!(
            "no llama.cpp CPU backend in {} runs on this machine ({detail})",
            dir.display()
        ),
    })
}

fn run_probe(probe: &Probe, module: &Path) -> Result<(), String> {
    let Probe::Command { exe, args, timeout } = probe else {
        return Ok(());
    };
    let mut child = std::process::Command::new(exe)
        .args(args)
        .arg(module)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the probe {}: {e}", exe.display()))?;
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    use std::io::Read;
                    let _ = err.read_to_string(&mut stderr);
                }
                // The child prints its reason as its last line; a crash leaves only the signal.
                let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                return Err(match (status.code(), last.is_empty()) {
                    (Some(_), false) => last.trim().to_owned(),
                    _ => format!("its probe {}", describe_status(status)),
                });
            }
            Ok(None) if started.elapsed() > *timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("probe did not finish within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("probe: {e}")),
        }
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(4) => "killed by SIGILL: an instruction this CPU cannot run".into(),
        Some(sig) => format!("killed by signal {sig}"),
        None => format!("exit status {}", status.code().unwrap_or(-1)),
    }
}

#[cfg(feature = "portable")]
#[allow(unsafe_code)]
fn load_module(path: &Path) -> Result<(), String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
    // SAFETY: `c` is a valid NUL-terminated path; ggml_backend_load registers the module and returns a
    // registry handle owned by ggml's global registry (null when the module is missing, invalid or its
    // `ggml_backend_score` says the CPU lacks its instructions).
    let reg = unsafe { llama_cpp_sys_2::ggml_backend_load(c.as_ptr()) };
    if reg.is_null() {
        return Err(REFUSED.into());
    }
    Ok(())
}

#[cfg(not(feature = "portable"))]
fn load_module(_path: &Path) -> Result<(), String> {
    Err("this binary was built without the `portable` feature".into())
}

/// The child side of a probe (`moltbot __cpu-probe <module>`): load only `module`, then a tiny Q8_0
/// random-weight model, decode a 64-token prompt and generate a few tokens. Exits the process with 0
/// on success; a SIGILL kills it, which is the point.
pub fn probe(module: &Path) -> Result<(), String> {
    let variant = module
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("libggml-cpu-"))
        .unwrap_or_default()
        .to_owned();
    // Loaded here, not through `configure`, so a refusal is one short line for the parent to report.
    load_module(module)?;
    let _ = CHOICE.set(Ok(CpuChoice {
        variant,
        path: Some(module.to_path_buf()),
        skipped: Vec::new(),
    }));
    if let Ok(v) = std::env::var("MOLTBOT_TEST_CPU_PROBE_CRASH")
        && module.to_string_lossy().contains(&format!("libggml-cpu-{v}."))
    {
        // Tests exercise the fallback with a real child crash on a chosen variant.
        std::process::abort();
    }
    let dir = std::env::temp_dir().join(format!("moltbot-cpu-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let model = dir.join("probe.gguf");
    let result = (|| {
        crate::gguf::write_synthetic(
            &model,
            &crate::gguf::SyntheticShape::tiny(),
            crate::gguf::TensorType::Q8_0,
            7,
        )
        .map_err(|e| e.to_string())?;
        let model = std::sync::Arc::new(crate::engine::load_model(&model, 0).map_err(|e| e.to_string())?);
        let prompt = crate::bench::prompt_tokens(&model, 64);
        crate::bench::raw_decode(&model, 1, &prompt, 4)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
