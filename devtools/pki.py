"""Per-cluster certificates for the local control plane, made with the `openssl` CLI.

One CA signs everything. Each component gets its own client certificate so that the audit log
can tell the operator's writes apart from kwok's heartbeats and the controller manager's work.
ECDSA P-256 keys keep generation well under a second on a slow machine.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DAYS = "3650"

# Names a client inside the cluster might use for the apiserver; nothing dials the service IP,
# but clients that verify the serving certificate by hostname still need them.
SERVING_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca_cert: Path
    ca_key: Path
    serving: ClientCert
    sa_key: Path
    sa_pub: Path
    clients: dict[str, ClientCert]


# user name (CN) -> groups (O). kube-controller-manager and kube-scheduler use the identities the
# bootstrap RBAC policy already grants; kwok and the admin bypass RBAC through system:masters.
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kwok": ("kwok-controller", ("system:masters",)),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
}


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def _ec_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    path.chmod(0o600)


def _subject(cn: str, groups: tuple[str, ...]) -> str:
    return "".join(f"/O={g}" for g in groups) + f"/CN={cn}"


def _sign(pki_dir: Path, ca_cert: Path, ca_key: Path, name: str, subject: str, ext: list[str]) -> ClientCert:
    key = pki_dir / f"{name}.key"
    crt = pki_dir / f"{name}.crt"
    _ec_key(key)
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / "req.csr"
        extfile = Path(tmp) / "ext.cnf"
        extfile.write_text("\n".join(ext) + "\n")
        _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-CAserial", str(Path(tmp) / "ca.srl"),
            "-days", DAYS, "-sha256", "-extfile", str(extfile), "-out", str(crt),
        )  # fmt: skip
    return ClientCert(cert=crt, key=key)


def generate(pki_dir: Path, service_ip: str) -> Pki:
    """Create a fresh CA, the apiserver serving cert, client certs and the ServiceAccount key pair."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_key = pki_dir / "ca.key"
    ca_cert = pki_dir / "ca.crt"
    _ec_key(ca_key)
    _openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-days", DAYS, "-sha256",
        "-subj", "/CN=ome-operator-local-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out", str(ca_cert),
    )  # fmt: skip

    san = ",".join([*(f"DNS:{d}" for d in SERVING_DNS), "IP:127.0.0.1", f"IP:{service_ip}"])
    serving = _sign(
        pki_dir,
        ca_cert,
        ca_key,
        "serving",
        "/CN=kube-apiserver",
        [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature",
            "extendedKeyUsage=serverAuth",
            f"subjectAltName={san}",
        ],
    )
    clients = {
        name: _sign(
            pki_dir,
            ca_cert,
            ca_key,
            name,
            _subject(cn, groups),
            [
                "basicConstraints=CA:FALSE",
                "keyUsage=critical,digitalSignature",
                "extendedKeyUsage=clientAuth",
            ],
        )
        for name, (cn, groups) in CLIENTS.items()
    }

    sa_key = pki_dir / "sa.key"
    sa_pub = pki_dir / "sa.pub"
    _ec_key(sa_key)
    _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
    return Pki(
        dir=pki_dir,
        ca_cert=ca_cert,
        ca_key=ca_key,
        serving=serving,
        sa_key=sa_key,
        sa_pub=sa_pub,
        clients=clients,
    )
