"""TLS to a remote scheduler: a self-signed certificate made in the test, real tls:// scheduler and worker."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import free_port

from mnist_dask.data.store import Store

pytestmark = pytest.mark.integration


def _self_signed(folder: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mnist-dask test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(folder)
    tls = ["--tls-ca-file", cert, "--tls-cert", cert, "--tls-key", key]
    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tls://127.0.0.1:{free_port()}"
    scheduler = subprocess.Popen(
        [
            dask,
            "scheduler",
            "--host",
            "127.0.0.1",
            "--protocol",
            "tls",
            "--port",
            address.rsplit(":", 1)[1],
            "--dashboard-address",
            "127.0.0.1:0",
            *tls,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1", *tls],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)
    try:
        yield address, tls
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.wait(timeout=30)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_dask", *args], capture_output=True, text=True, timeout=300)


def test_ingest_through_a_tls_scheduler(tls_cluster, mnist_dir, tmp_path):
    address, tls = tls_cluster
    store = str(tmp_path / "mnist.zarr")
    done = _cli(
        "ingest",
        "--source",
        f"idx:{mnist_dir}",
        "--store",
        store,
        "--scheduler",
        address,
        "--connect-timeout",
        "30",
        *tls,
    )
    assert done.returncode == 0, done.stderr
    assert Store(store).is_complete("raw")


def test_tls_scheduler_without_credentials_is_refused_quickly(tls_cluster, tmp_path):
    address, _ = tls_cluster
    started = time.monotonic()
    done = _cli(
        "ingest",
        "--source",
        "idx:/nowhere",
        "--store",
        str(tmp_path / "s.zarr"),
        "--scheduler",
        address,
        "--connect-timeout",
        "3",
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[0].startswith(f"mnist-dask: error: scheduler {address}: cannot connect")
    assert len(done.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60


def test_missing_tls_key_file_is_a_one_line_user_error(tls_cluster, tmp_path):
    address, tls = tls_cluster
    done = _cli(
        "ingest",
        "--store",
        str(tmp_path / "s.zarr"),
        "--scheduler",
        address,
        *tls[:4],
        "--tls-key",
        str(tmp_path / "missing.pem"),
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"mnist-dask: error: --tls-key: file '{tmp_path / 'missing.pem'}' does not exist"
