"""TLS through nginx with a CA made in the test, the public surface nginx exposes (and hides), and certbot + nginx
against Debian's pebble: issuance through the webroot, then a forced renewal whose deploy hook reloads nginx so it
serves the new certificate (new serial)."""

import base64
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

from cryptography import x509

from conftest import chat_servers
from harness import ADMIN_KEY, ROOT, FakeUpstream, free_port, port_open, request, wait_for

HOOK = ROOT / "deploy" / "nginx" / "certbot-deploy-hook.sh"


def test_tls_through_nginx_with_a_test_ca(cluster_factory, redis_factory, nginx_factory, tls, tmp_path):
    upstream = FakeUpstream("--chunks", "5", "--interval-ms", "150")
    try:
        cluster = cluster_factory(upstream.url, redis_factory())
        replicas = [cluster.add() for _ in range(2)]
        admin_port = free_port()
        nginx = nginx_factory(chat_servers=chat_servers(replicas), admin_listen=f"127.0.0.1:{admin_port}",
                              admin_servers=" ".join(r.addrs["admin_addr"] for r in replicas),
                              admin_allow="127.0.0.1/32").start()

        # A client that trusts only the test CA gets through, with TLS 1.2 or newer.
        r = request("GET", f"{nginx.https}/v1/models", key=ADMIN_KEY, context=tls)
        assert r.status == 200 and [m["id"] for m in r.json()["data"]] == ["default"], r.body
        with socket.create_connection(("127.0.0.1", nginx.https_port), 5) as raw:
            with tls.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                assert s.version() in ("TLSv1.2", "TLSv1.3")
        # A client with the system trust store (which does not know the test CA) is refused.
        r = request("GET", f"{nginx.https}/v1/models", key=ADMIN_KEY, context=ssl.create_default_context())
        assert r.status == 0 and "CERTIFICATE_VERIFY_FAILED" in r.error, r.error

        # Security headers, each once.
        r = request("GET", f"{nginx.https}/v1/models", key=ADMIN_KEY, context=tls)
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert r.headers["x-content-type-options"] == "nosniff"

        # HTTP → HTTPS with the method kept (308); the ACME challenge path is served over plain HTTP instead.
        for method in ("GET", "POST"):
            r = request(method, f"{nginx.http}/v1/models?x=1", body={} if method == "POST" else None)
            assert r.status == 308, (method, r.status)
            assert r.headers["location"] == f"https://127.0.0.1:{nginx.https_port}/v1/models?x=1"
        challenge = nginx.webroot / ".well-known" / "acme-challenge"
        challenge.mkdir(parents=True)
        (challenge / "token123").write_text("token123.thumbprint")
        r = request("GET", f"{nginx.http}/.well-known/acme-challenge/token123")
        assert r.status == 200 and r.body == b"token123.thumbprint"

        # Not exposed: /metrics, the admin API, debug — even with an admin key. (The replica does serve
        # /metrics on its admin listener, so the 404 is nginx's doing.)
        assert request("GET", f"{replicas[0].admin_url}/metrics").status == 200
        for path in ("/metrics", "/admin/api/keys", "/admin", "/debug/config"):
            r = request("GET", f"{nginx.https}{path}", key=ADMIN_KEY, context=tls)
            assert r.status == 404, (path, r.status)

        # The operator-only admin server (its own address, allow-listed, TLS) does reach the admin API, but
        # still not /metrics (Prometheus scrapes each replica itself).
        admin = f"https://127.0.0.1:{admin_port}"
        r = request("GET", f"{admin}/admin/api/keys", key=ADMIN_KEY, context=tls)
        assert r.status == 200 and "data" in r.json(), (r.status, r.body[:200])
        assert request("GET", f"{admin}/metrics", key=ADMIN_KEY, context=tls).status == 404

        # Request size limit at the edge (client_max_body_size 4m): 413 before any replica sees it.
        big = {"model": "default", "messages": [{"role": "user", "content": "x" * (5 << 20)}]}
        r = request("POST", f"{nginx.https}/v1/chat/completions", key=ADMIN_KEY, body=big, context=tls)
        assert r.status == 413

        # SSE is not buffered: the first event arrives long before the last (5 chunks, 150 ms apart).
        conn_sock = tls.wrap_socket(socket.create_connection(("127.0.0.1", nginx.https_port), 10),
                                    server_hostname="127.0.0.1")
        body = json.dumps({"model": "default", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        conn_sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
        )
        reader = conn_sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 200")
        first_event = last_event = None
        while line := reader.readline():
            if line.startswith(b"data:"):
                first_event = first_event or time.monotonic()
                last_event = time.monotonic()
                if b"[DONE]" in line:
                    break
        conn_sock.close()
        assert first_event and last_event - first_event > 0.4, last_event - first_event

        # WebSocket upgrade passes through nginx (and only on /v1/ws).
        key = base64.b64encode(os.urandom(16)).decode()
        for path, want in (("/v1/ws", b"HTTP/1.1 101"), ("/v1/models", b"HTTP/1.1 200")):
            with tls.wrap_socket(socket.create_connection(("127.0.0.1", nginx.https_port), 10),
                                 server_hostname="127.0.0.1") as s:
                s.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                status = s.makefile("rb").readline()
                assert status.startswith(want), (path, status)
    finally:
        upstream.stop()


def served_certificate(port: int, name: str) -> x509.Certificate:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), 5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True))


def live_certificate(config_dir: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((config_dir / "live" / name / "cert.pem").read_bytes())


def test_certbot_and_nginx_against_pebble_with_forced_renewal(
    cluster_factory, redis_factory, nginx_factory, test_ca, server_cert, tmp_path
):
    missing = [t for t in ("certbot", "pebble", "pebble-challtestsrv") if shutil.which(t) is None]
    assert not missing, f"missing {missing}: install the Debian packages certbot and pebble (no skip)"
    domain = "moltbot.example.com"
    upstream = FakeUpstream()
    procs = []
    try:
        cluster = cluster_factory(upstream.url, redis_factory())
        replica = cluster.add()

        # nginx starts with a placeholder certificate where the deploy hook will install certbot's.
        tls_dir = tmp_path / "nginx-tls"
        tls_dir.mkdir()
        cert_path, key_path = tls_dir / "fullchain.pem", tls_dir / "privkey.pem"
        cert_path.write_bytes(server_cert[0].read_bytes())
        key_path.write_bytes(server_cert[1].read_bytes())
        nginx = nginx_factory(cert=cert_path, key=key_path, server_name=domain, chat_servers=replica.chat).start()
        placeholder = served_certificate(nginx.https_port, domain)

        # pebble-challtestsrv as pebble's DNS (every name → 127.0.0.1), all its challenge listeners off.
        dns_port, chall_mgmt = free_port(), free_port()
        procs.append(subprocess.Popen(
            ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01",
             f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{chall_mgmt}"],
            stdout=open(tmp_path / "challtestsrv.log", "wb"), stderr=subprocess.STDOUT))
        # pebble: its HTTPS certificate from the test CA; HTTP-01 validation goes to nginx's HTTP port.
        pebble_cert, pebble_key = test_ca.issue("pebble", ["localhost"], ["127.0.0.1"])
        acme_port, acme_mgmt = free_port(), free_port()
        config = tmp_path / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{acme_mgmt}",
            "certificate": str(pebble_cert),
            "privateKey": str(pebble_key),
            "httpPort": nginx.http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }}))
        procs.append(subprocess.Popen(
            ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
            env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
            stdout=open(tmp_path / "pebble.log", "wb"), stderr=subprocess.STDOUT))
        wait_for("pebble", lambda: port_open(acme_port) and port_open(acme_mgmt) and port_open(dns_port), 20)

        # certbot (webroot through nginx), with the hook that installs the certificate and reloads nginx.
        certbot_dir = tmp_path / "certbot"
        hook_env = {
            "MOLTBOT_NGINX_TLS_CERT": str(cert_path),
            "MOLTBOT_NGINX_TLS_KEY": str(key_path),
            "MOLTBOT_NGINX_TEST": " ".join([*nginx.base_args, "-t", "-q"]),
            "MOLTBOT_NGINX_RELOAD": " ".join([*nginx.base_args, "-s", "reload"]),
        }
        hook = "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in hook_env.items()) + " " + shlex.quote(str(HOOK))
        dirs = ["--config-dir", str(certbot_dir / "config"), "--work-dir", str(certbot_dir / "work"),
                "--logs-dir", str(certbot_dir / "logs")]
        env = {**os.environ, "REQUESTS_CA_BUNDLE": str(test_ca.ca_file)}

        def certbot(*args):
            r = subprocess.run(["certbot", *args, *dirs, "--non-interactive"], env=env, capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
            return r

        certbot("certonly", "--server", f"https://127.0.0.1:{acme_port}/dir", "--agree-tos",
                "--register-unsafely-without-email", "--webroot", "-w", str(nginx.webroot), "-d", domain,
                "--deploy-hook", hook)
        first = live_certificate(certbot_dir / "config", domain)
        assert first.serial_number != placeholder.serial_number
        wait_for("nginx serving the issued certificate",
                 lambda: served_certificate(nginx.https_port, domain).serial_number == first.serial_number, 15)

        # The chain nginx serves verifies against pebble's root (fetched from its management API), for the domain.
        mgmt = ssl.create_default_context(cafile=str(test_ca.ca_file))
        root = request("GET", f"https://127.0.0.1:{acme_mgmt}/roots/0", context=mgmt)
        assert root.status == 200, root.body
        pebble_trust = ssl.create_default_context(cadata=root.body.decode())
        r = request("GET", f"https://127.0.0.1:{nginx.https_port}/v1/models", key=ADMIN_KEY, context=pebble_trust,
                    server_hostname=domain)
        assert r.status == 200, (r.status, r.error)

        # Forced renewal: the stored deploy hook runs, nginx reloads, and serves the new certificate.
        certbot("renew", "--force-renewal", "--no-random-sleep-on-renew")
        second = live_certificate(certbot_dir / "config", domain)
        assert second.serial_number != first.serial_number
        wait_for("nginx serving the renewed certificate",
                 lambda: served_certificate(nginx.https_port, domain).serial_number == second.serial_number, 15)
        r = request("GET", f"https://127.0.0.1:{nginx.https_port}/v1/models", key=ADMIN_KEY, context=pebble_trust,
                    server_hostname=domain)
        assert r.status == 200, (r.status, r.error)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        upstream.stop()
