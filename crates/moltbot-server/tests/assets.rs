//! The WebChat and console pages and their static files: public, embedded, each listener serving its
//! own page, strict CSP, ETag revalidation. (The pages themselves are exercised in tests/browser.)

mod common;

use common::*;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[tokio::test]
async fn pages_are_public_with_a_strict_csp() {
    let fake = fake().await;
    let srv = start(&fake).await;
    for (url, script) in [
        (srv.url("/"), "/assets/webchat.js"),
        (srv.admin_url("/"), "/assets/console.js"),
    ] {
        let r = srv.anon.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["content-security-policy"], CSP);
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-cache");
        let html = r.text().await.unwrap();
        assert!(html.contains(script), "{url} loads {script}");
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "no inline code in {url}"
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn assets_have_types_etags_and_answer_304() {
    let fake = fake().await;
    let srv = start(&fake).await;
    for (file, ctype) in [
        ("webchat.js", "text/javascript; charset=utf-8"),
        ("markdown.js", "text/javascript; charset=utf-8"),
        ("base.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let url = srv.url(&format!("/assets/{file}"));
        let r = srv.anon.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(r.headers()["content-type"], ctype);
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong ETag: {etag}"
        );
        assert!(!r.bytes().await.unwrap().is_empty());
        let again = srv
            .anon
            .get(&url)
            .header("if-none-match", format!("W/\"other\", {etag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert!(again.bytes().await.unwrap().is_empty());
        let changed = srv
            .anon
            .get(&url)
            .header("if-none-match", "\"stale\"")
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 200);
    }
    srv.stop().await;
}

#[tokio::test]
async fn each_listener_serves_only_its_files() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let ok = |r: &reqwest::Response| r.status().as_u16();
    let get = |url: String| {
        let c = srv.anon.clone();
        async move { c.get(url).send().await.unwrap() }
    };
    assert_eq!(ok(&get(srv.admin_url("/assets/console.js")).await), 200);
    assert_eq!(ok(&get(srv.admin_url("/assets/i18n.js")).await), 200);
    assert_eq!(ok(&get(srv.url("/assets/i18n.js")).await), 200);
    let r = get(srv.url("/assets/console.js")).await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "file");
    assert_eq!(body["error"]["code"], "asset_not_found");
    assert_eq!(ok(&get(srv.admin_url("/assets/webchat.js")).await), 404);
    assert_eq!(ok(&get(srv.url("/assets/..%2Fsrc%2Flib.rs")).await), 404);
    // Public paths stop at the pages: the APIs still need credentials.
    assert_eq!(ok(&get(srv.url("/v1/models")).await), 401);
    assert_eq!(ok(&get(srv.admin_url("/admin/api/keys")).await), 401);
    srv.stop().await;
}
