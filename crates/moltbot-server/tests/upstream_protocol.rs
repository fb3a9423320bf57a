//! The upstream client speaks HTTP/1.1, also to TLS upstreams that offer HTTP/2: over HTTP/2, hyper's
//! client sends every request to a host over one connection and, once the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` is reached (100–250 at hosted platforms, 200 in hyper), makes further
//! requests wait for a free stream instead of opening a second connection. With generations that stream
//! for a minute, the rest would queue into their first-byte timeout. Checked on the ClientHello the
//! client sends: the protocols it offers (ALPN).

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;

#[tokio::test]
async fn the_upstream_client_offers_only_http1_over_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
            .await
            .unwrap();
        start.client_hello().alpn().map(|protocols| {
            protocols
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
        })
        // Dropped here, without a ServerHello: the client's request fails, which is all this needs.
    });
    let client = moltbot_llm::http_client(Duration::from_secs(5));
    let sent = client.get(format!("https://{addr}/v1/models")).send().await;
    assert!(sent.is_err(), "no TLS server answered, yet: {sent:?}");
    let offered = server.await.unwrap();
    assert_eq!(offered, Some(vec!["http/1.1".to_owned()]));
}
