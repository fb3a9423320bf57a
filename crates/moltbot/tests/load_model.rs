//! `moltbot load-model` as an operator runs it: checksum mismatch refused, quantize + smoke test +
//! registration, a config name clash refused, and `bench-engine --synthetic`.

use std::path::Path;
use std::process::Command;

use moltbot_engine::gguf::{SyntheticShape, TensorType, write_synthetic};

const BIN: &str = env!("CARGO_BIN_EXE_moltbot");

fn moltbot(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "MOLTBOT_DATABASE_URL",
            format!("sqlite://{}", dir.join("m.db").display()),
        )
        .args(args)
        .output()
        .expect("run moltbot");
    let s = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), s(out.stdout), s(out.stderr))
}

#[test]
fn load_model_verifies_quantizes_smoke_tests_and_registers() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-f16.gguf");
    write_synthetic(&model, &SyntheticShape::tiny(), TensorType::F16, 5).unwrap();
    let path = model.to_str().unwrap();

    let (code, _, err) = moltbot(
        dir.path(),
        &["load-model", "--model-path", path, "--sha256", &"0".repeat(64)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(model.exists(), "a local source file is never deleted");

    let (code, out, err) = moltbot(
        dir.path(),
        &[
            "load-model",
            "--model-path",
            path,
            "--quantization",
            "8bit",
            "--name",
            "tiny",
            "--context",
            "512",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("quantizing to Q8_0"), "{err}");
    assert!(err.contains("smoke test reply"), "{err}");
    assert!(out.contains("registered model \"tiny\""), "{out}");
    assert!(dir.path().join("models/tiny-f16-q8_0.gguf").exists());

    // Asking for another quantization of an already-quantized file is refused.
    let q8 = dir.path().join("models/tiny-f16-q8_0.gguf");
    let (code, _, err) = moltbot(
        dir.path(),
        &[
            "load-model",
            "--model-path",
            q8.to_str().unwrap(),
            "--quantization",
            "4bit",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("already quantized"), "{err}");

    // Config models are fixed.
    std::fs::write(
        dir.path().join("moltbot.toml"),
        "[[models]]\nname = \"tiny\"\nendpoint = \"https://api.example.com/v1\"\n",
    )
    .unwrap();
    let (code, _, err) = moltbot(
        dir.path(),
        &["load-model", "--model-path", path, "--name", "tiny", "--no-smoke"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("defined in the config file"), "{err}");
}

#[test]
fn bench_engine_measures_a_synthetic_model() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = moltbot(
        dir.path(),
        &[
            "bench-engine",
            "--synthetic",
            "tiny",
            "--threads",
            "1",
            "--prompt",
            "32",
            "--gen",
            "8",
            "--streams",
            "2",
            "--baseline",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for key in [
        "prompt_tps",
        "gen_tps",
        "baseline_prompt_tps",
        "baseline_gen_tps",
        "aggregate_n_tps",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    assert_eq!(v["cuda_build"], false);
}
