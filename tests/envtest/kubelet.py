"""Runs a container of a rendered Pod template as a process, the way a kubelet would.

The image is this checkout, bind-mounted where the Dockerfile puts its files (the code at
WORKDIR, this virtualenv at /opt/venv), with the Dockerfile's ENTRYPOINT and ENV; the
container's args and env are taken as rendered.
What the kubelet provides is provided the same way, in a private mount namespace: the
ServiceAccount token, CA and namespace at /var/run/secrets/kubernetes.io/serviceaccount
with KUBERNETES_SERVICE_HOST/PORT in the environment (so the program finds the API server
in-cluster, as in a Pod), each volumeMount bind-mounted at its mountPath, the root file
system read-only when readOnlyRootFilesystem says so, and the user and group of the
securityContext. Needs root, like a kubelet. Only the arguments named in `rewrite` change:
the tests rewrite the bind address (a free loopback port instead of 0.0.0.0:8443).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.envtest.controlplane import ControlPlane, Process, in_mount_namespace, start_process
from tests.server import ROOT

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


# Where the Dockerfile's build stage installs the runtime dependencies.
IMAGE_VENV = Path("/opt/venv")


@dataclass(frozen=True)
class Image:
    """What the Dockerfile's last stage says the container runs, and its files from this checkout."""

    entrypoint: tuple[str, ...]
    env: Mapping[str, str]
    workdir: Path

    @classmethod
    def from_dockerfile(cls, path: Path = ROOT / "Dockerfile") -> Image:
        """ENTRYPOINT, ENV and WORKDIR of the final stage."""
        entrypoint: tuple[str, ...] = ()
        env: dict[str, str] = {}
        workdir = Path("/")
        for line in path.read_text().splitlines():
            instruction, _, rest = line.strip().partition(" ")
            if instruction == "FROM":
                entrypoint, env, workdir = (), {}, Path("/")
            elif instruction == "ENTRYPOINT":
                entrypoint = tuple(json.loads(rest))
            elif instruction == "WORKDIR":
                workdir = Path(rest.strip())
            elif instruction == "ENV":
                for item in shlex.split(rest):
                    key, _, value = item.partition("=")
                    env[key] = value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
        if not entrypoint:
            raise AssertionError(f"{path} has no ENTRYPOINT in its last stage")
        return cls(entrypoint, env, workdir)

    def command(self) -> list[str]:
        """The ENTRYPOINT with its program found on the image's PATH, as an absolute path.

        The runtime would pass `python` as is; here the virtualenv's interpreter links to
        one under /root, which Python cannot stat as user 65532 when it looks itself up
        by PATH, so the container path is given whole.
        """
        program, *rest = self.entrypoint
        if "/" not in program:
            for directory in self.env.get("PATH", "").split(":"):
                host = Path(directory)
                if host.is_relative_to(IMAGE_VENV):
                    host = Path(sys.prefix) / host.relative_to(IMAGE_VENV)
                if (host / program).exists():
                    return [str(Path(directory) / program), *rest]
        return [program, *rest]

    def files(self) -> list[tuple[Path, Path]]:
        """This checkout as the image's file system: the code at WORKDIR, the virtualenv at /opt/venv."""
        return [(ROOT, self.workdir), (Path(sys.prefix), IMAGE_VENV)]


@dataclass
class Kubelet:
    """Runs containers of one Pod template against a control plane."""

    control_plane: ControlPlane
    pod_spec: Mapping[str, Any]
    namespace: str
    workdir: Path
    pod_name: str = "multihome-0"
    volumes: dict[str, Path] = field(default_factory=dict)
    image: Image = field(default_factory=Image.from_dockerfile)
    _created: list[Path] = field(default_factory=list)

    def service_account_token(self) -> None:
        """Project a bound token of the Pod's ServiceAccount, as the kubelet does."""
        directory = self.workdir / "serviceaccount"
        directory.mkdir(parents=True, exist_ok=True)
        token = self.control_plane.token(self.namespace, str(self.pod_spec["serviceAccountName"]))
        (directory / "token").write_text(token)
        (directory / "ca.crt").write_bytes(self.control_plane.pki.ca_cert.read_bytes())
        (directory / "namespace").write_text(self.namespace)
        _readable(directory)
        self.volumes["kube-api-access"] = directory

    def project_secret(self, volume: str, data: Mapping[str, bytes]) -> Path:
        """Write a Secret's keys as files of the volume `volume` (mode 0644, the default)."""
        directory = self.workdir / "volumes" / volume
        directory.mkdir(parents=True, exist_ok=True)
        for key, value in data.items():
            (directory / key).write_bytes(value)
        _readable(directory)
        self.volumes[volume] = directory
        return directory

    def container(self, name: str) -> Mapping[str, Any]:
        """A container or init container of the template, by name."""
        for item in [*self.pod_spec.get("initContainers", []), *self.pod_spec["containers"]]:
            if item["name"] == name:
                return dict(item)
        raise KeyError(f"the Pod template has no container {name}")

    def start(self, name: str, *, rewrite: Mapping[str, str] | None = None) -> Process:
        """Start container `name` as a process in its own mount namespace."""
        container = self.container(name)
        args = [_rewritten(arg, rewrite or {}) for arg in container.get("args", [])]
        argv = [*self.image.command(), *args]
        mounts = self._mounts(container)
        security = {**self.pod_spec.get("securityContext", {}), **container.get("securityContext", {})}
        prefix = "mount -o remount,bind,ro /" if security.get("readOnlyRootFilesystem") else ""
        if "runAsUser" in security:
            group = security.get("runAsGroup", security["runAsUser"])
            # fsGroup is a supplementary group of every container in the Pod.
            groups = f"--groups={security['fsGroup']}" if "fsGroup" in security else "--clear-groups"
            argv = ["setpriv", f"--reuid={security['runAsUser']}", f"--regid={group}", groups, *argv]
        log = self.workdir / f"{name}.log"
        return start_process(
            name,
            in_mount_namespace(mounts, argv, prefix=prefix, hostname=self.pod_name, cwd=self.image.workdir),
            log,
            env=self._env(container),
            cwd=ROOT,
        )

    def cleanup(self) -> None:
        """Remove the mount points this kubelet had to create on the host."""
        for path in reversed(self._created):
            try:
                path.rmdir()
            except OSError:
                continue

    def _mounts(self, container: Mapping[str, Any]) -> list[tuple[Path, Path]]:
        mounts = self.image.files()
        if self.pod_spec.get("automountServiceAccountToken", True):
            if "kube-api-access" not in self.volumes:
                self.service_account_token()
            mounts.append((self.volumes["kube-api-access"], SERVICE_ACCOUNT_DIR))
        declared = {v["name"]: v for v in self.pod_spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = declared[mount["name"]]
            if mount["name"] not in self.volumes and "emptyDir" in volume:
                directory = self.workdir / "volumes" / mount["name"]
                directory.mkdir(parents=True, exist_ok=True)
                directory.chmod(0o1777)
                self.volumes[mount["name"]] = directory
            if mount["name"] not in self.volumes:
                raise AssertionError(f"volume {mount['name']} has no content: project it first")
            mounts.append((self.volumes[mount["name"]], Path(mount["mountPath"])))
        for _, target in mounts:
            self._mount_point(target)
        # A target that holds another mount's source (/tmp, say) is mounted last.
        return sorted(mounts, key=lambda m: any(s.is_relative_to(m[1]) for s, _ in mounts))

    def _mount_point(self, target: Path) -> None:
        missing = [p for p in [target, *target.parents] if not p.exists()]
        for path in reversed(missing):
            path.mkdir()
            self._created.append(path)

    def _env(self, container: Mapping[str, Any]) -> dict[str, str]:
        fields = {"metadata.namespace": self.namespace, "metadata.name": self.pod_name}
        env = {
            **self.image.env,
            "HOSTNAME": self.pod_name,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.control_plane.port),
        }
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            else:
                env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        return env


def _rewritten(arg: str, rewrite: Mapping[str, str]) -> str:
    flag, sep, _ = arg.partition("=")
    return f"{flag}={rewrite[flag]}" if sep and flag in rewrite else arg


def _readable(directory: Path) -> None:
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
