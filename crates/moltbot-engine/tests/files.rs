//! Getting model files: resumable HTTP downloads, checksums, `s3://` through object_store (against a
//! local moto server), directories, and quantization to 4bit and 8bit.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use moltbot_engine::fetch::{self, Checksums, FetchError, FetchOptions, Source};
use moltbot_engine::gguf::{self, TensorType};
use moltbot_engine::{LocalBackend, Quantization};

/// A server for one file that cuts the first response off halfway (after promising the full length)
/// and honours `Range` afterwards.
async fn flaky_server(bytes: Arc<Vec<u8>>) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let ranges = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (h, r) = (hits.clone(), ranges.clone());
    let app = axum::Router::new().route(
        "/models/tiny.gguf",
        axum::routing::get(move |headers: HeaderMap| {
            let (bytes, hits, ranges) = (bytes.clone(), h.clone(), r.clone());
            async move {
                let n = hits.fetch_add(1, Ordering::SeqCst);
                let range = headers
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                ranges.lock().unwrap().push(range.clone().unwrap_or_default());
                let total = bytes.len();
                if n == 0 {
                    let half = bytes[..total / 2].to_vec();
                    let stream = futures::stream::iter(vec![
                        Ok::<_, std::io::Error>(axum::body::Bytes::from(half)),
                        Err(std::io::Error::other("cut off")),
                    ]);
                    return Response::builder()
                        .header(header::CONTENT_LENGTH, total)
                        .body(Body::from_stream(stream))
                        .unwrap();
                }
                let start: usize = range
                    .and_then(|r| {
                        r.strip_prefix("bytes=")
                            .and_then(|r| r.strip_suffix('-'))
                            .map(str::to_owned)
                    })
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                Response::builder()
                    .status(if start > 0 {
                        StatusCode::PARTIAL_CONTENT
                    } else {
                        StatusCode::OK
                    })
                    .header(
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{}/{total}", total - 1),
                    )
                    .body(Body::from(bytes[start..].to_vec()))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/models/tiny.gguf"), hits, ranges)
}

#[tokio::test]
async fn download_resumes_after_a_cut_off_and_checksums_are_verified() {
    let original = common::tiny_model();
    let bytes = Arc::new(std::fs::read(&original).unwrap());
    let (want_sha, want_md5) = fetch::digests(&original).unwrap();
    let (url, hits, ranges) = flaky_server(bytes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = fetch::fetch(&Source::parse(&url).unwrap(), &FetchOptions::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(ranges.lock().unwrap()[1], format!("bytes={}-", bytes.len() / 2));
    let sums = Checksums {
        sha256: Some(want_sha.to_uppercase()),
        md5: Some(want_md5.clone()),
    };
    assert_eq!(fetch::verify(&path, &sums, true).unwrap(), (want_sha, want_md5));
    gguf::inspect(&path).unwrap();

    let wrong = Checksums {
        sha256: Some("0".repeat(64)),
        md5: None,
    };
    let err = fetch::verify(&path, &wrong, true).unwrap_err();
    assert!(
        matches!(err, FetchError::Checksum { algo: "sha256", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not registered"));
    assert!(!path.exists(), "a mismatching download is removed");
}

#[test]
fn directories_and_bad_locations_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let err = fetch::resolve_local(dir.path()).unwrap_err().to_string();
    assert!(err.contains("holds no .gguf"), "{err}");
    std::fs::write(dir.path().join("model.safetensors"), b"{}").unwrap();
    let err = fetch::resolve_local(dir.path()).unwrap_err().to_string();
    assert!(err.contains("convert_hf_to_gguf"), "{err}");
    std::fs::copy(common::tiny_model(), dir.path().join("a.gguf")).unwrap();
    assert_eq!(
        fetch::resolve_local(dir.path()).unwrap(),
        dir.path().join("a.gguf")
    );
    std::fs::copy(common::tiny_model(), dir.path().join("b.gguf")).unwrap();
    assert!(matches!(
        fetch::resolve_local(dir.path()),
        Err(FetchError::SeveralGguf { .. })
    ));
    assert!(matches!(
        Source::parse("ftp://x/y.gguf"),
        Err(FetchError::Scheme(_))
    ));
    assert!(matches!(
        Source::parse("s3://bucket/m.gguf"),
        Ok(Source::Object(_))
    ));
    assert!(matches!(
        Source::parse("./models/llama3-7b"),
        Ok(Source::Local(_))
    ));
}

#[test]
fn quantization_to_4bit_and_8bit_through_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for (q, ty) in [
        (Quantization::Q4, TensorType::Q4K),
        (Quantization::Q8, TensorType::Q8_0),
    ] {
        let out = dir.path().join(format!("tiny-{}.gguf", q.as_str()));
        moltbot_engine::quantize::quantize(&common::tiny_model(), &out, q, 1).unwrap();
        let info = gguf::inspect(&out).unwrap();
        assert_eq!(info.weight_type(), Some(ty), "{q:?}");
        assert!(info.file_len < std::fs::metadata(common::tiny_model()).unwrap().len() / 3);
        // The quantized file loads and generates.
        let b = LocalBackend::start(
            moltbot_engine::EngineConfig {
                threads: Some(1),
                ..moltbot_engine::EngineConfig::new("q", &out)
            },
            None,
        )
        .unwrap();
        let tokens = b.engine().tokenize("hello");
        let mut rx = b
            .engine()
            .submit(tokens, 4, moltbot_engine::Sampling::greedy(), vec![])
            .unwrap();
        let mut done = false;
        while let Some(ev) = rx.blocking_recv() {
            done |= matches!(ev, moltbot_engine::Event::Done { .. });
        }
        assert!(done);
        // An already-quantized file asked for another type is refused with a clear message.
        let again = dir.path().join("again.gguf");
        let other = if q == Quantization::Q4 {
            Quantization::Q8
        } else {
            Quantization::Q4
        };
        let err = moltbot_engine::quantize::quantize(&out, &again, other, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already quantized"), "{err}");
    }
}

fn moto_server() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [root.join(".venv/bin/moto_server")];
    candidates.into_iter().find(|p| p.exists())
}

/// `s3://` through the object_store client against moto's S3 server (from `tests/e2e/requirements.txt`,
/// installed in `.venv` by `make deps-python`); skipped when moto is not installed, unless `CI=true`.
#[tokio::test]
async fn s3_urls_download_through_object_store() {
    let Some(moto) = moto_server() else {
        assert!(
            std::env::var("CI").is_err(),
            "moto_server not installed: run `make deps-python`"
        );
        eprintln!("skipping: moto_server not installed (make deps-python)");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let opts: Vec<(String, String)> = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        // Create the bucket (moto accepts unsigned requests).
        if let Ok(r) = client.put(format!("{endpoint}/models")).send().await {
            ready = r.status().is_success();
            if ready {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "moto did not start");
    let bytes = std::fs::read(common::tiny_model()).unwrap();
    let url = url::Url::parse("s3://models/llama/tiny.gguf").unwrap();
    let (store, path) = object_store::parse_url_opts(&url, opts.clone()).unwrap();
    store.put(&path, bytes.clone().into()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut fo = FetchOptions::new(dir.path());
    fo.object_store = opts;
    let got = fetch::fetch(&Source::parse(url.as_str()).unwrap(), &fo).await;
    let _ = child.kill();
    let _ = child.wait();
    let got = got.unwrap();
    assert_eq!(got.file_name().unwrap(), "tiny.gguf");
    assert_eq!(std::fs::read(&got).unwrap(), bytes);
}
