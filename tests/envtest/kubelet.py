"""Runs a rendered Pod template as processes, following the kubelet's order and rules.

The image is this checkout, bind-mounted where the Dockerfile puts its files (the code at
WORKDIR, this virtualenv at /opt/venv), with the Dockerfile's ENTRYPOINT and ENV; the
containers' args and env are taken as rendered. Only the arguments named in `rewrite`
change: the tests rewrite the bind address (a free loopback port instead of 0.0.0.0:8443).

What a kubelet does, and in its order (`Kubelet.run_pod`):
1. Every `secret`, `configMap` and `projected` volume is set up before any container runs.
   A missing object, or a missing key named in `items`, that is not `optional` is a
   FailedMount: the Pod stays in ContainerCreating and nothing runs. Files are written the
   way the kubelet's atomic writer does: a timestamped directory, a `..data` link to it and
   one link per key, so an update swaps every file at once.
2. Init containers in order, each to completion; one that fails stops the Pod.
3. Then the containers, with their probes as declared: the startup probe first (failing
   past its threshold restarts the container), then readiness (a failing probe takes the
   Pod out of the Service's endpoints: `RunningPod.endpoints`) and liveness (restarts).
   A container that exits is restarted (restartPolicy Always), with the kubelet's back-off.
4. A periodic sync writes later changes of a mounted Secret or ConfigMap into the volume
   (the kubelet's is about a minute; `sync_period` here is shorter).

Each container runs in a private mount namespace, as root until setpriv drops to the
securityContext's user: the ServiceAccount token, CA and namespace at
/var/run/secrets/kubernetes.io/serviceaccount with KUBERNETES_SERVICE_HOST/PORT in the
environment (so the program finds the API server in-cluster), each volumeMount bind-mounted
at its mountPath, the root file system read-only when readOnlyRootFilesystem says so.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shlex
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.envtest.controlplane import ControlPlane, Process, in_mount_namespace, start_process
from tests.server import ROOT

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


# Where the Dockerfile's build stage installs the runtime dependencies.
IMAGE_VENV = Path("/opt/venv")
# The kubelet's restart back-off: 10 s, doubling, at most 5 min.
RESTART_BACKOFF = (10.0, 300.0)
# What a volume holds: file path (relative, may have folders) to content.
Payload = dict[str, bytes]


class FailedMount(AssertionError):
    """A volume could not be set up: the kubelet's FailedMount event; the Pod does not start."""


class InitContainerFailed(AssertionError):
    """An init container exited non-zero: the Pod does not get to its containers."""


@dataclass(frozen=True)
class Image:
    """What the Dockerfile's last stage says the container runs, and its files from this checkout."""

    entrypoint: tuple[str, ...]
    env: Mapping[str, str]
    workdir: Path
    # The code the image holds: this checkout, or an older release's tree (`git archive`).
    source: Path = ROOT

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
        """The source as the image's file system: the code at WORKDIR, the virtualenv at /opt/venv."""
        return [(self.source, self.workdir), (Path(sys.prefix), IMAGE_VENV)]


@dataclass
class Kubelet:
    """Runs the containers of one Pod template against a control plane."""

    control_plane: ControlPlane
    pod_spec: Mapping[str, Any]
    namespace: str
    workdir: Path
    pod_name: str = "multihome-0"
    volumes: dict[str, Path] = field(default_factory=dict)
    image: Image = field(default_factory=Image.from_dockerfile)
    sync_period: float = 2.0
    _created: list[Path] = field(default_factory=list)

    # --- the Pod, in the kubelet's order --------------------------------------------------

    def run_pod(
        self, *, rewrite: Mapping[str, str] | None = None, ports: Mapping[int, int] | None = None
    ) -> RunningPod:
        """Volumes, then init containers in order, then the containers with their probes.

        `ports` maps a containerPort to where the rewritten process listens, for the probes.
        FailedMount or InitContainerFailed when the Pod would not get to its containers.
        """
        self.set_up_volumes()
        init_output = {
            item["name"]: self.run_to_completion(item["name"])
            for item in self.pod_spec.get("initContainers", [])
        }
        pod = RunningPod(self, dict(rewrite or {}), dict(ports or {}), init_output)
        pod.start()
        return pod

    def set_up_volumes(self) -> None:
        """Every volume of the Pod, before any container: FailedMount names the first that cannot be."""
        for volume in self.pod_spec.get("volumes", []):
            name = volume["name"]
            if "emptyDir" in volume:
                directory = self.workdir / "volumes" / name
                directory.mkdir(parents=True, exist_ok=True)
                directory.chmod(0o1777)
                self.volumes[name] = directory
            elif _SOURCES & volume.keys():
                write_atomically(self.workdir / "volumes" / name, self.payload(volume))
                self.volumes[name] = self.workdir / "volumes" / name
            else:
                raise AssertionError(
                    f"volume {name}: this kubelet knows no {sorted(volume.keys() - {'name'})}"
                )

    def sync_volumes(self) -> None:
        """The periodic sync: a changed Secret or ConfigMap reaches its volume's files."""
        for volume in self.pod_spec.get("volumes", []):
            if _SOURCES & volume.keys() and volume["name"] in self.volumes:
                try:
                    payload = self.payload(volume)
                except FailedMount:
                    continue  # the kubelet keeps the files it has and retries
                write_atomically(self.volumes[volume["name"]], payload)

    def payload(self, volume: Mapping[str, Any]) -> Payload:
        """What a secret, configMap or projected volume holds now; FailedMount as the kubelet says it."""
        name = volume["name"]
        if "secret" in volume:
            source = volume["secret"]
            return self._object_payload(name, "secret", source["secretName"], source)
        if "configMap" in volume:
            source = volume["configMap"]
            return self._object_payload(name, "configmap", source["name"], source)
        payload: Payload = {}
        for item in volume["projected"]["sources"]:
            if "secret" in item:
                payload |= self._object_payload(name, "secret", item["secret"]["name"], item["secret"])
            elif "configMap" in item:
                payload |= self._object_payload(
                    name, "configmap", item["configMap"]["name"], item["configMap"]
                )
            elif "serviceAccountToken" in item:
                token = self.control_plane.token(self.namespace, str(self.pod_spec["serviceAccountName"]))
                payload[item["serviceAccountToken"]["path"]] = token.encode()
            else:
                raise AssertionError(f"volume {name}: this kubelet projects no {sorted(item)}")
        return payload

    def _object_payload(self, volume: str, kind: str, name: str, source: Mapping[str, Any]) -> Payload:
        optional = bool(source.get("optional", False))
        done = self.control_plane.kubectl("get", kind, name, "-n", self.namespace, "-o", "json", check=False)
        if done.returncode != 0:
            if optional and "NotFound" in done.stderr:
                return {}
            raise FailedMount(f'MountVolume.SetUp failed for volume "{volume}" : {kind} "{name}" not found')
        obj = json.loads(done.stdout)
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        if kind == "configmap":
            data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
            data |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        items = source.get("items")
        if items is None:
            return data
        payload: Payload = {}
        for item in items:
            if item["key"] in data:
                payload[item["path"]] = data[item["key"]]
            elif not optional:
                raise FailedMount(
                    f'MountVolume.SetUp failed for volume "{volume}" : configmap references non-existent '
                    f"config key: {item['key']}"
                    if kind == "configmap"
                    else f'MountVolume.SetUp failed for volume "{volume}" : references non-existent secret key: {item["key"]}'
                )
        return payload

    def run_to_completion(self, name: str, timeout: float = 60) -> str:
        """Run an init container; its output, or InitContainerFailed with it."""
        process = self.start(name)
        try:
            code = process.popen.wait(timeout)
        finally:
            process.stop()
        output = process.log_path.read_text()
        if code != 0:
            raise InitContainerFailed(f"init container {name} exited {code}:\n{output}")
        return output

    # --- one container ---------------------------------------------------------------------

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

    def container(self, name: str) -> Mapping[str, Any]:
        """A container or init container of the template, by name."""
        for item in [*self.pod_spec.get("initContainers", []), *self.pod_spec["containers"]]:
            if item["name"] == name:
                return dict(item)
        raise KeyError(f"the Pod template has no container {name}")

    def start(self, name: str, *, rewrite: Mapping[str, str] | None = None) -> Process:
        """Start container `name` as a process in its own mount namespace (volumes set up first)."""
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
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in self.volumes:
                raise AssertionError(
                    f"volume {mount['name']} is not set up: run_pod (or set_up_volumes) first"
                )
            source = self.volumes[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mounts.append((source, Path(mount["mountPath"])))
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


_SOURCES = {"secret", "configMap", "projected"}


def write_atomically(directory: Path, payload: Payload) -> bool:
    """Write `payload` as the kubelet's atomic writer does; False when it already holds it.

    The files live in a fresh `..<timestamp>` directory; `..data` is swapped to it by a
    rename, and each top-level name is a link through `..data`, so a reader sees the old
    set or the new one, never half of each.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    data = directory / "..data"
    if data.exists() and _read_payload(data) == payload:
        return False
    stamp = directory / f"..{dt.datetime.now(dt.UTC):%Y_%m_%d_%H_%M_%S.%f}"
    stamp.mkdir(mode=0o755)
    for relative, content in payload.items():
        target = stamp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(0o644)
    old = os.readlink(data) if data.is_symlink() else None
    swap = directory / "..data_tmp"
    swap.unlink(missing_ok=True)
    swap.symlink_to(stamp.name)
    swap.rename(data)
    tops = {Path(relative).parts[0] for relative in payload}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(Path("..data") / top)
    for entry in directory.iterdir():
        if not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    if old is not None:
        _remove_tree(directory / old)
    return True


def _read_payload(data: Path) -> Payload:
    return {str(p.relative_to(data)): p.read_bytes() for p in data.rglob("*") if p.is_file()}


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


@dataclass
class Container:
    """One running container of the Pod and what its probes said."""

    name: str
    process: Process
    started: bool = False
    ready: bool = False
    restarts: int = 0
    exits: list[str] = field(default_factory=list)


class RunningPod:
    """The Pod's containers once its init containers completed: probes, restarts, volume sync."""

    def __init__(
        self, kubelet: Kubelet, rewrite: dict[str, str], ports: dict[int, int], init_output: dict[str, str]
    ) -> None:
        self.kubelet = kubelet
        self.rewrite = rewrite
        self.ports = ports
        self.init_output = init_output
        self.containers: dict[str, Container] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for spec in self.kubelet.pod_spec["containers"]:
            process = self.kubelet.start(spec["name"], rewrite=self.rewrite)
            self.containers[spec["name"]] = container = Container(spec["name"], process)
            self._spawn(f"probe-{spec['name']}", lambda s=spec, c=container: self._probe_loop(s, c))
        self._spawn("volume-sync", self._sync_loop)

    @property
    def ready(self) -> bool:
        """The Pod's Ready condition: every container's readiness probe passes."""
        return all(c.ready for c in self.containers.values())

    def endpoints(self) -> list[str]:
        """The addresses the Service's endpoints hold for this Pod: none while it is not ready."""
        return ["127.0.0.1"] if self.ready else []

    def process(self, name: str) -> Process:
        return self.containers[name].process

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for container in self.containers.values():
            container.process.stop()

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.kubelet.sync_period):
            self.kubelet.sync_volumes()

    def _probe_loop(self, spec: Mapping[str, Any], container: Container) -> None:
        startup, readiness, liveness = (
            spec.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe")
        )
        failures = {"startup": 0, "readiness": 0, "liveness": 0}
        due = dict.fromkeys(failures, time.monotonic())
        backoff = RESTART_BACKOFF[0]
        container.started = startup is None
        container.ready = readiness is None and container.started
        while not self._stop.wait(0.2):
            if container.process.popen.poll() is not None:
                container.exits.append(container.process.log_tail())
                container.started = container.ready = False
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, RESTART_BACKOFF[1])
                self._restart(spec, container, failures, due)
                continue
            now = time.monotonic()
            for kind, probe in (("startup", startup), ("readiness", readiness), ("liveness", liveness)):
                if probe is None or now < due[kind] or (kind != "startup") != container.started:
                    continue
                due[kind] = now + float(probe.get("periodSeconds", 10))
                ok = self._passes(spec, probe)
                failures[kind] = 0 if ok else failures[kind] + 1
                threshold = int(probe.get("failureThreshold", 3))
                if kind == "startup" and ok:
                    container.started = True
                    due["readiness"] = due["liveness"] = now
                elif kind == "readiness":
                    container.ready = ok or (container.ready and failures[kind] < threshold)
                elif not ok and failures[kind] >= threshold:  # startup or liveness: the kubelet kills it
                    container.exits.append(f"{kind} probe failed {threshold} times")
                    container.process.stop()
                    self._restart(spec, container, failures, due)

    def _restart(
        self, spec: Mapping[str, Any], container: Container, failures: dict[str, int], due: dict[str, float]
    ) -> None:
        container.restarts += 1
        container.process = self.kubelet.start(spec["name"], rewrite=self.rewrite)
        container.started = spec.get("startupProbe") is None
        container.ready = False
        failures.update(dict.fromkeys(failures, 0))
        due.update(dict.fromkeys(due, time.monotonic()))

    def _passes(self, spec: Mapping[str, Any], probe: Mapping[str, Any]) -> bool:
        get = probe.get("httpGet")
        if get is None:
            raise AssertionError(f"container {spec['name']}: this kubelet only runs httpGet probes")
        port = get["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port)
        port = self.ports.get(int(port), int(port))
        scheme = str(get.get("scheme", "HTTP")).lower()
        context = None
        if scheme == "https":  # the kubelet does not verify a probe's certificate
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        url = f"{scheme}://127.0.0.1:{port}{get.get('path', '/')}"
        try:
            with urllib.request.urlopen(
                url, timeout=float(probe.get("timeoutSeconds", 1)), context=context
            ) as r:
                return 200 <= int(r.status) < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False


def _rewritten(arg: str, rewrite: Mapping[str, str]) -> str:
    flag, sep, _ = arg.partition("=")
    return f"{flag}={rewrite[flag]}" if sep and flag in rewrite else arg


def _readable(directory: Path) -> None:
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
