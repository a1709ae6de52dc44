"""The grid's own certificate authority, made at `up`: HTTPS/WebDAV of the storages (XrdHttp) and HTTP
third-party copies between them are TLS, as in production, and every client of the grid trusts this CA
through X509_CERT_DIR (grid.client_env). Made with the openssl command; kept until a day before expiry.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from . import procs
from .config import GridConfig

DAYS = 30


def tls_dir(cfg: GridConfig) -> Path:
    return cfg.state_dir / "tls"


def ca_dir(cfg: GridConfig) -> Path:
    """The hashed CA directory clients and servers trust (X509_CERT_DIR)."""
    return tls_dir(cfg) / "certificates"


def host_cert(cfg: GridConfig) -> tuple[Path, Path]:
    return tls_dir(cfg) / "hostcert.pem", tls_dir(cfg) / "hostkey.pem"


def _openssl(*args: str) -> None:
    run = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise procs.GridError(f"openssl {args[0]} failed: {run.stderr.strip()[-500:]}")


def _valid_for_a_day(cert: Path) -> bool:
    if not cert.exists():
        return False
    return subprocess.run(["openssl", "x509", "-checkend", "86400", "-noout", "-in", str(cert)],
                          capture_output=True).returncode == 0


def ensure(cfg: GridConfig, owner: str) -> None:
    """Make the CA and one host certificate for 127.0.0.1 (every storage of the grid) if missing or about
    to expire; the key goes to `owner` (the storages' user), mode 0600."""
    d = tls_dir(cfg)
    cert, key = host_cert(cfg)
    ca_cert, ca_key = d / "ca.pem", d / "ca.key"
    if _valid_for_a_day(cert) and _valid_for_a_day(ca_cert) and (ca_dir(cfg)).is_dir():
        return
    d.mkdir(parents=True, exist_ok=True)
    subj = f"/O=juno-grid-local/CN=JUNO local grid CA {int(time.time())}"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert),
             "-days", str(DAYS), "-subj", subj)
    csr, ext = d / "host.csr", d / "host.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", "/O=juno-grid-local/CN=127.0.0.1")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", str(DAYS), "-extfile", str(ext))
    certs = ca_dir(cfg)
    shutil.rmtree(certs, ignore_errors=True)
    certs.mkdir()
    shutil.copy(ca_cert, certs / "juno-grid-ca.pem")
    _openssl("rehash", str(certs))
    d.chmod(0o755)
    ca_key.chmod(0o600)
    cert.chmod(0o644)
    key.chmod(0o600)
    shutil.chown(key, owner, owner)
    shutil.chown(cert, owner, owner)
