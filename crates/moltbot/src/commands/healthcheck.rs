//! `moltbot healthcheck`: the container/script readiness probe. It asks the running server's dialog
//! listener for `/ready` over loopback, so an image needs no curl or shell (the admin listener may refuse
//! loopback through `server.admin_allow_cidrs`). Unlike `doctor`, it checks nothing else: an upstream
//! outage must not mark every container unhealthy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;

use crate::args::{GlobalArgs, HealthcheckArgs};

pub fn run(global: &GlobalArgs, args: &HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let config = super::load_config(global)?.config;
            default_url(config.chat_addr, config.tls.on("dialog"))
        }
    };
    let timeout = args.timeout;
    let result = super::runtime()?.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // The probe talks to its own process over loopback (or to the URL given); the
            // certificate is checked by real clients, not here.
            .danger_accept_invalid_certs(true)
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

/// `/ready` on the dialog listener, reached over loopback when it listens on every address.
fn default_url(listener: SocketAddr, tls: bool) -> String {
    let ip = match listener.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}/ready", SocketAddr::new(ip, listener.port()))
}

#[cfg(test)]
mod tests {
    use super::default_url;

    #[test]
    fn unspecified_addresses_become_loopback() {
        assert_eq!(
            default_url("0.0.0.0:9000".parse().unwrap(), false),
            "http://127.0.0.1:9000/ready"
        );
        assert_eq!(
            default_url("[::]:9000".parse().unwrap(), true),
            "https://[::1]:9000/ready"
        );
        assert_eq!(
            default_url("10.1.2.3:9000".parse().unwrap(), false),
            "http://10.1.2.3:9000/ready"
        );
    }
}
