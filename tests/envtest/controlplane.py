"""A real control plane on loopback: etcd, kube-apiserver and, when asked, kube-controller-manager.

The assets follow controller-runtime's envtest convention: a directory named by
KUBEBUILDER_ASSETS holding `etcd`, `kube-apiserver` and `kubectl` (what `setup-envtest use`
prints), plus `kube-controller-manager` when a test wants one. The harness makes its own
PKI (a CA, the API server's serving pair, an admin client certificate in `system:masters`,
a service-account signing key), starts each binary on free loopback ports with its output
in a log file, and stops exactly the processes it started.

The API server runs with RBAC and the Node authorizer, an audit log of every request
(so a test can read what an identity asked for and what it was answered), and, when
`hosts` is given, in a mount namespace of its own with those names in its /etc/hosts:
that is how it dials a webhook by its Service's DNS name on a machine with no cluster DNS.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ASSETS_ENV = "KUBEBUILDER_ASSETS"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Nothing routes Service traffic here; the range only has to be valid.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class ControlPlaneError(Exception):
    """A binary is missing, or a process did not start; the message says which and why."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assets_directory() -> Path:
    """KUBEBUILDER_ASSETS, checked for the binaries the tier needs."""
    value = os.environ.get(ASSETS_ENV, "")
    if not value:
        raise ControlPlaneError(
            f"{ASSETS_ENV} is not set: point it at a directory with etcd, kube-apiserver and kubectl "
            "(`setup-envtest use 1.28.x -p path`, or `make envtest-assets` on this project's machines)"
        )
    directory = Path(value)
    for binary in ("etcd", "kube-apiserver"):
        if not os.access(directory / binary, os.X_OK):
            raise ControlPlaneError(f"{ASSETS_ENV}={directory} has no executable {binary}")
    return directory


# --- PKI -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """The files of the control plane's own PKI."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_public: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        """A CA, the API server's serving pair, an admin client pair and a service-account key."""
        directory.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envtest-ca")])
        ca = (
            _builder(ca_name, ca_name, ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(ca_key, hashes.SHA256())
        )
        serving_key = ec.generate_private_key(ec.SECP256R1())
        names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        serving = (
            _builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
                ca_name,
                serving_key.public_key(),
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [*(x509.DNSName(n) for n in names), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = (
            _builder(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                        x509.NameAttribute(NameOID.COMMON_NAME, "envtest-admin"),
                    ]
                ),
                ca_name,
                admin_key.public_key(),
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        sa_key = ec.generate_private_key(ec.SECP256R1())
        pki = cls(
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            serving_cert=directory / "apiserver.crt",
            serving_key=directory / "apiserver.key",
            admin_cert=directory / "admin.crt",
            admin_key=directory / "admin.key",
            service_account_key=directory / "sa.key",
            service_account_public=directory / "sa.pub",
        )
        for path, cert in ((pki.ca_cert, ca), (pki.serving_cert, serving), (pki.admin_cert, admin)):
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        for path, key in (
            (pki.ca_key, ca_key),
            (pki.serving_key, serving_key),
            (pki.admin_key, admin_key),
            (pki.service_account_key, sa_key),
        ):
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            path.chmod(0o600)
        pki.service_account_public.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return pki


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


# --- processes -----------------------------------------------------------------------------


@dataclass
class Process:
    """One started binary, its log, and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; closes the log."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.log_file.close()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the process's output, for error messages."""
        with suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def start_process(name: str, argv: Sequence[str], log_path: Path, **kwargs: Any) -> Process:
    """Start `argv` with stdout and stderr in `log_path`."""
    log_file = log_path.open("ab")
    popen = subprocess.Popen(list(argv), stdout=log_file, stderr=subprocess.STDOUT, **kwargs)
    return Process(name, popen, log_path, log_file)


def in_mount_namespace(
    mounts: Sequence[tuple[Path, Path]],
    argv: Sequence[str],
    *,
    prefix: str = "",
    hostname: str = "",
    cwd: Path | None = None,
) -> list[str]:
    """argv run in a private mount namespace after bind-mounting each (source, target).

    `prefix` is shell run after the mounts and before `exec` (a read-only remount, say);
    `hostname` gives the process a UTS namespace with that name, as a Pod has; `cwd` is
    where it starts, once the mounts are in place.
    Needs root, as the kubelet does for the same mounts.
    """
    script = ["set -e"]
    if hostname:
        script.append(f"hostname {_q(hostname)}")
    script += [f"mount --bind {_q(source)} {_q(target)}" for source, target in mounts]
    if prefix:
        script.append(prefix)
    if cwd is not None:
        script.append(f"cd {_q(cwd)}")
    script.append('exec "$@"')
    uts = ["--uts"] if hostname else []
    return [
        "unshare",
        "--mount",
        *uts,
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "\n".join(script),
        "sh",
        *argv,
    ]


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


# --- the control plane ---------------------------------------------------------------------


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback, in `workdir`."""

    assets: Path
    workdir: Path
    hosts: Mapping[str, str] = field(default_factory=dict)
    controller_manager: bool = False
    processes: dict[str, Process] = field(default_factory=dict)
    etcd_port: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = Pki.create(self.workdir / "pki")
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.audit_log = self.workdir / "audit.log"
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()

    @property
    def url(self) -> str:
        """The API server's address."""
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> ControlPlane:
        """Start every component and wait until the API server is ready."""
        try:
            self.start_etcd()
            self.start_apiserver()
            self._write_kubeconfig(
                self.kubeconfig,
                user={
                    "client-certificate": str(self.pki.admin_cert),
                    "client-key": str(self.pki.admin_key),
                },
            )
            if self.controller_manager:
                self.start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop what this harness started, newest first."""
        for name in reversed(list(self.processes)):
            self.processes.pop(name).stop()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # etcd

    def start_etcd(self) -> None:
        """etcd with a fresh data directory."""
        data = self.workdir / "etcd"
        shutil.rmtree(data, ignore_errors=True)
        client, peer = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.etcd_peer_port}"
        argv = [
            str(self.assets / "etcd"),
            "--name=envtest",
            f"--data-dir={data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=envtest={peer}",
            "--log-level=warn",
            # A quiet resource's watch cache advances only on etcd's progress notifications
            # (10 min by default): often enough here for bookmarks to reach quiet watches.
            "--experimental-watch-progress-notify-interval=2s",
        ]
        self._start("etcd", argv)
        self._wait("etcd", lambda: _http_ok(f"{client}/health"))

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision; returns that revision."""
        base = f"http://127.0.0.1:{self.etcd_port}/v3"
        status = _post_json(f"{base}/kv/range", {"key": "AA==", "limit": 1})
        revision = int(status["header"]["revision"])
        _post_json(f"{base}/kv/compaction", {"revision": revision, "physical": True})
        return revision

    # kube-apiserver

    def start_apiserver(self) -> None:
        """kube-apiserver against the running etcd; waits for /readyz."""
        self.audit_policy = self.workdir / "audit-policy.yaml"
        self.audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        argv = [
            str(self.assets / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--tls-cert-file={self.pki.serving_cert}",
            f"--tls-private-key-file={self.pki.serving_key}",
            f"--client-ca-file={self.pki.ca_cert}",
            f"--service-account-key-file={self.pki.service_account_public}",
            f"--service-account-signing-key-file={self.pki.service_account_key}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=Node,RBAC",
            # Endpoints may not hold loopback addresses: the kubernetes Service keeps none.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--audit-policy-file={self.audit_policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
        ]
        if self.hosts:
            hosts = self.workdir / "hosts"
            original = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
            hosts.write_text(original + "".join(f"{ip} {name}\n" for name, ip in self.hosts.items()))
            argv = in_mount_namespace([(hosts, Path("/etc/hosts"))], argv)
        self._start("kube-apiserver", argv)
        self._wait("kube-apiserver", self._ready, timeout=60)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone; etcd keeps the data."""
        self.processes.pop("kube-apiserver").stop()

    def _ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return _http_ok(f"{self.url}/readyz", context)

    # kube-controller-manager

    def start_controller_manager(self) -> None:
        """kube-controller-manager: default ServiceAccounts, ReplicaSets, namespace deletion, GC."""
        if not os.access(self.assets / "kube-controller-manager", os.X_OK):
            raise ControlPlaneError(
                f"{ASSETS_ENV}={self.assets} has no kube-controller-manager, which this module runs "
                "(setup-envtest does not ship one: put a v1.28 binary beside kube-apiserver, as "
                "`make envtest-assets` does)"
            )
        argv = [
            str(self.assets / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
            f"--service-account-private-key-file={self.pki.service_account_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            "--use-service-account-credentials=true",
            "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service",
        ]
        self._start("kube-controller-manager", argv)

        def default_service_account() -> bool:
            done = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            return done.returncode == 0

        self._wait("kube-controller-manager", default_service_account, timeout=60)

    # clients

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """kubectl against this control plane, as the admin unless another kubeconfig is given."""
        binary = self.assets / "kubectl"
        kubectl = str(binary) if binary.exists() else (shutil.which("kubectl") or "kubectl")
        done = subprocess.run(
            [kubectl, "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=stdin,
            text=True,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done

    def apply(self, *objects: Mapping[str, Any], server_side: bool = False) -> None:
        """kubectl apply the objects, in order."""
        extra = ["--server-side", "--force-conflicts"] if server_side else []
        self.kubectl("apply", *extra, "-f", "-", stdin=yaml.safe_dump_all([dict(o) for o in objects]))

    def get(self, *args: str) -> dict[str, Any]:
        """kubectl get ... -o json, parsed."""
        result: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return result

    def token(self, namespace: str, service_account: str, duration: str = "1h") -> str:
        """A bound token for the ServiceAccount (TokenRequest), as the kubelet projects one."""
        return self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()

    def token_kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig that authenticates with `token`."""
        self._write_kubeconfig(path, user={"token": token})
        return path

    def audit_events(self) -> Iterator[dict[str, Any]]:
        """Every request the API server has logged so far."""
        with self.audit_log.open() as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)

    # internals

    def _write_kubeconfig(self, path: Path, *, user: Mapping[str, str]) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "envtest",
                    "cluster": {"server": self.url, "certificate-authority": str(self.pki.ca_cert)},
                }
            ],
            "users": [{"name": "user", "user": dict(user)}],
            "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "user"}}],
            "current-context": "envtest",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _start(self, name: str, argv: Sequence[str]) -> None:
        self.processes[name] = start_process(name, argv, self.workdir / f"{name}.log")

    def _wait(self, name: str, ready: Any, timeout: float = 30) -> None:
        process = self.processes[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {process.popen.returncode}:\n{process.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} was not ready within {timeout:.0f} s:\n{process.log_tail()}")


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _post_json(url: str, body: Mapping[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result
