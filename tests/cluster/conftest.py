"""Fixtures for the cluster tests (run with `make test-cluster`): a test CA, the fake upstream, and factories for
clusters of replicas, private Redis servers and nginx instances that are torn down after each test.

Needs on PATH: nginx, redis-server, psql, envsubst, curl, pgrep (certificates come from `cryptography`); the
certbot test also needs certbot, pebble and pebble-challtestsrv (Debian packages). PostgreSQL at MOLTBOT_TEST_POSTGRES_URL
(default postgres://postgres@127.0.0.1:5432/test): each test creates and drops its own database."""

import datetime
import ipaddress
import shutil
import ssl
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

REQUIRED_TOOLS = ["nginx", "redis-server", "psql", "envsubst", "curl", "pgrep"]


@pytest.fixture(scope="session", autouse=True)
def tools():
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    # A missing tool is a failure, not a skip: CI must install it (see tests/cluster/README.md).
    assert not missing, f"missing tools: {missing}"
    for binary in (harness.BIN, harness.FAKE):
        assert Path(binary).exists(), f"{binary} is missing: run `make bins`"


class TestCA:
    """A CA made for this test run, and server certificates it signs."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moltbot cluster test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, dns: list[str], ips: list[str]) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0] if dns else ips[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        )
        key_file.chmod(0o600)
        return cert_file, key_file

    def client_context(self) -> ssl.SSLContext:
        """Trusts this CA and nothing else."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_verify_locations(cafile=str(self.ca_file))
        return ctx


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def server_cert(test_ca):
    """nginx's certificate in every test: localhost and 127.0.0.1, signed by the test CA."""
    return test_ca.issue("nginx", ["localhost"], ["127.0.0.1"])


@pytest.fixture(scope="session")
def tls(test_ca):
    return test_ca.client_context()


@pytest.fixture
def fake_upstream():
    up = harness.FakeUpstream()
    yield up
    up.stop()


@pytest.fixture
def redis_factory(tmp_path):
    started = []

    def make() -> harness.Redis:
        r = harness.Redis(tmp_path / f"redis{len(started)}")
        r.workdir.mkdir()
        started.append(r.start())
        return r

    yield make
    for r in started:
        r.kill()


@pytest.fixture
def cluster_factory(tmp_path):
    made = []

    def make(upstream_url: str, redis: harness.Redis | None, **extra_env) -> harness.Cluster:
        c = harness.Cluster(tmp_path, upstream_url, redis, extra_env)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def nginx_factory(tmp_path, server_cert):
    made = []

    def make(cert=None, key=None, **kw) -> harness.Nginx:
        n = harness.Nginx(tmp_path / f"nginx{len(made)}", cert or server_cert[0], key or server_cert[1], **kw)
        made.append(n)
        return n

    yield make
    for n in made:
        n.stop()


def chat_servers(replicas) -> str:
    return " ".join(r.chat for r in replicas)
