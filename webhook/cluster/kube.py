"""The API server, behind a small interface: list, watch, get, patch.

The `kubernetes` package is used for what it does well, reading a kubeconfig or the
in-cluster service account (tokens refreshed as they rotate); the HTTP is plain
urllib3, so a watch is a stream of JSON lines with timeouts we choose, resumed by
our own reflector (`webhook/cluster/live.py`) rather than the client's `watch.stream`, which
resumes at most once after 410 and ignores bookmarks in some versions.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlencode

import urllib3
import yaml
from kubernetes import config as kube_config
from kubernetes.client import Configuration

log = logging.getLogger("multihome.kube")

# Pods are watched as metadata only: memory does not grow with Pod specs.
METADATA_LIST: Final = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
# One page of a list: its objects and the list's resourceVersion.
Page = tuple[list[dict[str, Any]], str]
# Objects per page of a list: client-go's reflector asks for 500 too.
LIST_PAGE_SIZE: Final = 500
METADATA_WATCH: Final = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


class ApiError(Exception):
    """The API server answered with an error status (or could not be reached: status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


class KubeApi(Protocol):
    """What multihome asks of the API server."""

    def list(self, path: str, *, metadata_only: bool = False) -> tuple[list[dict[str, Any]], str]:
        """All objects at `path` and the list's resourceVersion."""
        ...

    def pages(self, path: str, *, metadata_only: bool = False, page_size: int = ...) -> Iterator[Page]:
        """The list at `path` a page at a time, each with the list's resourceVersion."""
        ...

    def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int, metadata_only: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Watch events after `resource_version`, with bookmarks, until the server ends the watch."""
        ...

    def get(self, path: str, *, timeout: float) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        ...

    def write(
        self,
        method: str,
        path: str,
        body: object,
        *,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """POST, PUT, PATCH or DELETE; ApiError on failure (409 on a conflict)."""
        ...


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is and how to authenticate to it."""

    configuration: Configuration

    @classmethod
    def load(cls, kubeconfig: Path | None = None, context: str | None = None) -> Endpoint:
        """As kubectl finds a cluster: `kubeconfig`, else $KUBECONFIG, else ~/.kube/config, else in-cluster.

        $KUBECONFIG may list several files (merged, the first to set a value wins);
        `context` picks a context other than the current one. ValueError says what was
        tried and why it failed, in one line.
        """
        configuration = Configuration()
        files = [kubeconfig] if kubeconfig is not None else kubeconfig_files()
        try:
            if files:
                kube_config.load_kube_config(
                    config_file=os.pathsep.join(str(f) for f in files),
                    context=context or _current_context(files),
                    client_configuration=configuration,
                )
            elif context:
                raise ValueError(
                    f'--context "{context}" needs a kubeconfig, and none was found ({_SEARCHED})'
                )
            elif not os.environ.get("KUBERNETES_SERVICE_HOST"):
                raise ValueError(
                    f"no cluster to talk to: no kubeconfig ({_SEARCHED}) and not running in a Pod"
                )
            else:
                kube_config.load_incluster_config(client_configuration=configuration)
        except (kube_config.ConfigException, OSError) as err:
            where = (
                f"kubeconfig {os.pathsep.join(map(str, files))}"
                if files
                else "the in-cluster service account"
            )
            reason = " ".join(str(err).split())
            raise ValueError(f"cannot use {where}: {reason}") from None
        return cls(configuration)


_SEARCHED = "--kubeconfig, $KUBECONFIG, ~/.kube/config"


def _current_context(files: list[Path]) -> str | None:
    """The current-context of the first file that sets one, as kubectl merges them.

    The client's own merge lets the last file's current-context win; kubectl lets the first.
    """
    if len(files) < 2:
        return None
    for path in files:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(loaded, dict) and loaded.get("current-context"):
            return str(loaded["current-context"])
    return None


def kubeconfig_files() -> list[Path]:
    """The kubeconfig files kubectl would read: those of $KUBECONFIG that exist, else ~/.kube/config."""
    listed = os.environ.get("KUBECONFIG")
    if listed is not None:
        return [Path(p) for p in listed.split(os.pathsep) if p and Path(p).is_file()]
    try:
        default = Path.home() / ".kube" / "config"
    except RuntimeError:  # no HOME and no passwd entry: a container's non-root user
        return []
    return [default] if default.is_file() else []


class HttpKubeApi:
    """KubeApi over urllib3 with the kubeconfig's server, CA and credentials."""

    def __init__(
        self, endpoint: Endpoint, *, connect_timeout: float = 5.0, read_timeout: float = 30.0
    ) -> None:
        self.configuration = endpoint.configuration
        self.host = self.configuration.host.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        ssl_options: dict[str, Any] = {}
        if self.host.startswith("https"):
            ssl_options = {
                "cert_reqs": "CERT_REQUIRED" if self.configuration.verify_ssl else "CERT_NONE",
                "ca_certs": self.configuration.ssl_ca_cert,
                "cert_file": self.configuration.cert_file,
                "key_file": self.configuration.key_file,
            }
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=16, retries=False, **ssl_options)

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": "multihome"}
        settings: Mapping[str, Any] = dict(self.configuration.auth_settings())
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"])] = str(setting["value"])
        return headers

    def _request(
        self, path: str, query: Mapping[str, str], accept: str, timeout: urllib3.Timeout, *, stream: bool
    ) -> urllib3.BaseHTTPResponse:
        separator = "&" if "?" in path else "?"
        url = f"{self.host}{path}" + (f"{separator}{urlencode(query)}" if query else "")
        try:
            response = self.pool.request(
                "GET", url, headers=self._headers(accept), timeout=timeout, preload_content=not stream
            )
        except urllib3.exceptions.HTTPError as err:
            raise ApiError(0, f"GET {path}: {network_reason(err)}") from None
        if response.status >= 400:
            body = response.data if not stream else response.read(4096)
            response.release_conn()
            raise ApiError(response.status, f"GET {path}: {_status_message(body)}")
        return response

    def list(self, path: str, *, metadata_only: bool = False) -> tuple[list[dict[str, Any]], str]:
        """All objects at `path` and the list's resourceVersion, read in pages."""
        items: list[dict[str, Any]] = []
        version = ""
        for page, page_version in self.pages(path, metadata_only=metadata_only):
            items += page
            version = page_version
        return items, version

    def pages(
        self, path: str, *, metadata_only: bool = False, page_size: int = LIST_PAGE_SIZE
    ) -> Iterator[Page]:
        """The list at `path` a page at a time, as client-go's pager reads it.

        `limit`, then `continue` until the server gives no token; every page comes with the
        list's resourceVersion. A token the server no longer honours (410 Expired: etcd
        compacted the revision the list started from) raises ApiError 410: list again.
        Neither side ever holds a whole 100,000-object response.
        """
        accept = METADATA_LIST if metadata_only else "application/json"
        timeout = urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout * 4)
        token = ""
        while True:
            query = {"limit": str(page_size), **({"continue": token} if token else {})}
            response = self._request(path, query, accept, timeout, stream=False)
            try:
                body = json.loads(response.data)
            except ValueError as err:
                raise ApiError(0, f"GET {path}: response is not JSON: {err}") from None
            metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            items = body.get("items") or []
            yield [i for i in items if isinstance(i, dict)], str(metadata.get("resourceVersion", ""))
            token = str(metadata.get("continue") or "")
            if not token:
                return

    def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int, metadata_only: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Watch events; the client read timeout sits above the server's so a silent stream ends."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        accept = METADATA_WATCH if metadata_only else "application/json"
        timeout = urllib3.Timeout(connect=self.connect_timeout, read=timeout_seconds + 30)
        response = self._request(path, query, accept, timeout, stream=True)
        try:
            buffer = b""
            # read1: whatever has arrived, so each event is seen as soon as it is sent.
            while chunk := response.read1(64 * 1024):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _event(line)
            if buffer.strip():
                yield _event(buffer)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise ApiError(0, f"watch {path}: {network_reason(err)}") from None
        finally:
            response.release_conn()

    def get(self, path: str, *, timeout: float) -> dict[str, Any] | None:
        """One object, or None for 404."""
        try:
            response = self._request(
                path, {}, "application/json", urllib3.Timeout(connect=timeout, read=timeout), stream=False
            )
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        obj = json.loads(response.data)
        return obj if isinstance(obj, dict) else None

    def write(
        self,
        method: str,
        path: str,
        body: object,
        *,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """POST, PUT, PATCH or DELETE one object; ApiError carries the status (409: conflict)."""
        headers = {**self._headers("application/json"), "Content-Type": content_type}
        data = json.dumps(body).encode() if body is not None else None
        try:
            response = self.pool.request(
                method,
                f"{self.host}{path}",
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout),
            )
        except urllib3.exceptions.HTTPError as err:
            raise ApiError(0, f"{method} {path}: {network_reason(err)}") from None
        if response.status >= 400:
            raise ApiError(response.status, f"{method} {path}: {_status_message(response.data)}")
        return _decode_object(response.data)


def network_reason(err: Exception) -> str:
    """Why a request did not reach the API server, short: `connection refused`, `timed out`, ..."""
    cause: object = getattr(err, "reason", None) or err
    text = str(cause)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        return found[1].strip().lower()
    if isinstance(cause, urllib3.exceptions.TimeoutError) or "timed out" in text:
        return "timed out"
    if isinstance(cause, urllib3.exceptions.SSLError) or "SSL" in text:
        return f"TLS failed: {text[:200]}"
    return f"{type(cause).__name__}: {text[:200]}"


def _decode_object(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data) if data else {}
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        raise ApiError(0, "watch stream sent a line that is not JSON") from None
    if not isinstance(event, dict):
        raise ApiError(0, "watch stream sent an event that is not an object")
    return event


def _status_message(body: bytes) -> str:
    try:
        status = json.loads(body)
        return str(status.get("message") or status.get("reason") or body[:200])
    except ValueError:
        return body[:200].decode(errors="replace")
