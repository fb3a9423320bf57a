//! `moltbot healthcheck`: the container/script readiness probe. It asks the running server's dialog
//! listener for `/ready` over loopback, so an image needs no curl or shell (the admin listener may refuse
//! loopback through `server.admin_allow_cidrs`). Unlike `doctor`, it checks nothing else: an upstream
//! outage must not mark every container unhealthy.

use std::process::ExitCode;

use crate::args::{GlobalArgs, HealthcheckArgs};

pub fn run(global: &GlobalArgs, args: &HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let config = super::load_config(global)?.config;
            format!(
                "{}/ready",
                super::loopback_url(config.chat_addr, config.tls.on("dialog"))
            )
        }
    };
    let timeout = args.timeout;
    let result = super::runtime()?.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // The probe talks to its own process over loopback (or to the URL given); the
            // certificate is checked by real clients, not here.
            .danger_accept_invalid_certs(true)
            // Nothing to verify against, so no trust store to read (292 files on Debian) at every probe.
            .tls_built_in_root_certs(false)
            .no_proxy()
            .build()?;
        let resp = client.get(&url).send().await?;
        anyhow::Ok((resp.status(), url))
    });
    match result {
        Ok((status, _)) if status.is_success() => Ok(ExitCode::SUCCESS),
        Ok((status, url)) => {
            eprintln!("unhealthy: {url} answered {status}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("unhealthy: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}
