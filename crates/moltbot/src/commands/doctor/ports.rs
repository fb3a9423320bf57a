//! Listener addresses: free, already held by moltbot, or held by another process (and which one,
//! from `/proc/net/tcp*` and `/proc/<pid>/fd`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use moltbot_config::Config;

use super::Check;

pub async fn listeners(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let addrs = [
        (
            "chat",
            Some(config.chat_addr),
            "chat_addr / --chat-addr / MOLTBOT_CHAT_ADDR",
        ),
        (
            "admin",
            Some(config.admin_addr),
            "admin_addr / --admin-addr / MOLTBOT_ADMIN_ADDR",
        ),
        ("debug", config.debug_addr, "debug_addr / --debug-addr"),
        (
            "metrics",
            config.metrics_addr,
            "metrics_addr / MOLTBOT_METRICS_ADDR",
        ),
    ];
    for (name, addr, key) in addrs {
        if let Some(addr) = addr {
            out.push(listener(name, addr, key).await);
        }
    }
    out
}

async fn listener(name: &str, addr: SocketAddr, key: &str) -> Check {
    let check = format!("listener {name}");
    if addr.port() == 0 {
        return Check::skip(check, format!("{addr}: an ephemeral port, nothing to check"));
    }
    let err = match std::net::TcpListener::bind(addr) {
        Ok(_) => return Check::pass(check, format!("{addr} is free")),
        Err(e) => e,
    };
    match err.kind() {
        std::io::ErrorKind::AddrInUse => {
            let owner = port_owner(addr.port());
            let by_name = owner
                .as_ref()
                .is_some_and(|(_, comm)| comm.starts_with("moltbot"));
            if by_name || answers_like_moltbot(addr).await {
                let pid = owner.map(|(pid, _)| format!(" (pid {pid})")).unwrap_or_default();
                return Check::pass(check, format!("{addr} is held by a running moltbot{pid}"));
            }
            let who = match owner {
                Some((pid, comm)) => format!("{comm} (pid {pid})"),
                None => format!(
                    "another process (not visible to this user; `ss -ltnp 'sport = :{}'` as root shows it)",
                    addr.port()
                ),
            };
            Check::fail(
                check,
                format!("{addr} is already in use by {who}"),
                format!("stop that process, or give moltbot another address with {key}"),
            )
        }
        std::io::ErrorKind::PermissionDenied => Check::fail(
            check,
            format!("{addr}: permission denied"),
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port above 1024 behind the proxy",
        ),
        std::io::ErrorKind::AddrNotAvailable => Check::fail(
            check,
            format!("{addr}: no such address on this host"),
            format!("use 0.0.0.0, 127.0.0.1 or one of this host's addresses in {key}"),
        ),
        _ => Check::fail(check, format!("{addr}: {err}"), format!("check {key}")),
    }
}

/// Whether something on `addr` answers `/health` the way moltbot does (JSON status + request id).
async fn answers_like_moltbot(addr: SocketAddr) -> bool {
    let target = if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        // Only identifying the holder of the port (which may speak native TLS with a certificate for a
        // public name), not trusting it with anything.
        .danger_accept_invalid_certs(true)
        .tls_built_in_root_certs(false)
        .build()
        .unwrap_or_default();
    let mut answer = None;
    for scheme in ["http", "https"] {
        if let Ok(resp) = client.get(format!("{scheme}://{target}/health")).send().await {
            answer = Some(resp);
            break;
        }
    }
    let Some(resp) = answer else {
        return false;
    };
    let has_id = resp.headers().contains_key("x-request-id");
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    has_id && body["status"] == "ok"
}

/// The process listening on TCP `port`: (pid, command name). Linux only; `None` when not visible.
pub fn port_owner(port: u16) -> Option<(u32, String)> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if inodes.iter().any(|i| target == format!("socket:[{i}]")) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some((pid, comm.trim().to_owned()));
            }
        }
    }
    None
}

/// Socket inodes in LISTEN state (`0A`) on `port`, from a `/proc/net/tcp*` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    let hex_port = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next()?;
            (local_port == hex_port && *f.get(3)? == "0A").then(|| f.get(9).map(|s| (*s).to_owned()))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listening_sockets_in_a_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n\
           1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0\n";
        assert_eq!(listening_inodes(table, 8080), ["4242"]);
        assert!(listening_inodes(table, 8081).is_empty());
    }

    #[test]
    fn the_owner_of_our_own_listener_is_us() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (pid, _) = port_owner(port).expect("our own socket is visible");
        assert_eq!(pid, std::process::id());
    }
}
