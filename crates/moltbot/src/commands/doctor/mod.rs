//! `moltbot doctor [--json]`: the troubleshooting guide as a command. Every check has a verdict
//! (pass, warn, fail, skip), what it found, and for anything not passing, the fix. The exit status
//! is non-zero when any check fails.

mod backends;
mod channels;
mod models;
mod ports;
mod system;

use std::process::ExitCode;

use serde::Serialize;

use crate::args::{DoctorArgs, GlobalArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Verdict {
    fn tag(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Verdict::Pass, detail, None::<String>)
    }

    pub fn skip(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Verdict::Skip, detail, None::<String>)
    }

    pub fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Verdict::Warn, detail, Some(fix))
    }

    pub fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Verdict::Fail, detail, Some(fix))
    }

    fn new(
        name: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: Option<impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            verdict,
            detail: detail.into(),
            fix: fix.map(Into::into),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    checks: Vec<Check>,
}

pub fn run(global: &GlobalArgs, args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let checks = super::runtime()?.block_on(collect(global, args));
    let report = Report {
        ok: checks.iter().all(|c| c.verdict != Verdict::Fail),
        checks,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn collect(global: &GlobalArgs, args: &DoctorArgs) -> Vec<Check> {
    let loaded = match super::load_config(global) {
        Ok(l) => l,
        Err(e) => {
            return vec![Check::fail(
                "config",
                format!("invalid: {e}"),
                "fix the key named above (`moltbot config check` repeats this; docs/config.md lists every key)",
            )];
        }
    };
    let config = loaded.config;
    let mut checks = vec![if loaded.warnings.is_empty() {
        Check::pass("config", format!("valid (profile {})", config.profile.as_str()))
    } else {
        Check::warn(
            "config",
            format!("valid, with warnings: {}", loaded.warnings.join("; ")),
            "see each warning; `moltbot config show` prints the effective configuration",
        )
    }];
    checks.extend(ports::listeners(&config).await);
    checks.push(system::database(&config).await);
    checks.push(system::redis(&config).await);
    let backend_checks = backends::remote(&config).await;
    checks.extend(backend_checks.checks);
    checks.extend(models::local(&config, !args.no_checksums).await);
    checks.push(system::cpu_backend());
    checks.push(system::gpu(&config));
    checks.extend(system::disk(&config));
    checks.push(system::jwt_secret(&config));
    checks.push(system::trust_store());
    checks.push(system::debug_listener(&config));
    checks.extend(channels::accounts(&config).await);
    checks.push(backend_checks.clock);
    checks
}

fn print_text(report: &Report) {
    let width = report.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    println!("moltbot doctor");
    for c in &report.checks {
        println!("  {}  {:width$}  {}", c.verdict.tag(), c.name, c.detail);
        if let Some(fix) = &c.fix {
            println!("        {:width$}  fix: {fix}", "");
        }
    }
    let count = |v| report.checks.iter().filter(|c| c.verdict == v).count();
    println!(
        "{} passed, {} warnings, {} failed, {} skipped",
        count(Verdict::Pass),
        count(Verdict::Warn),
        count(Verdict::Fail),
        count(Verdict::Skip)
    );
}
