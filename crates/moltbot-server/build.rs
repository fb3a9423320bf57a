//! Records the git commit for `moltbot_build_info{commit}`: `MOLTBOT_GIT_COMMIT` if set (container
//! builds without `.git`), else `git rev-parse --short=12 HEAD`, else `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MOLTBOT_GIT_COMMIT");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // HEAD, and the branch file it points to (which changes on commit).
    let head = root.join(".git/HEAD");
    let mut watch = vec![head.clone(), root.join(".git/packed-refs")];
    if let Ok(text) = std::fs::read_to_string(&head)
        && let Some(r) = text.trim().strip_prefix("ref: ")
    {
        watch.push(root.join(".git").join(r));
    }
    for p in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let commit = std::env::var("MOLTBOT_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(&root)
                .output()
                .ok()?;
            let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (out.status.success() && !s.is_empty()).then_some(s)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=MOLTBOT_GIT_COMMIT={commit}");
}
