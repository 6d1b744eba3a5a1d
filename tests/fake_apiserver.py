"""A small API server on loopback: list, watch (with bookmarks) and get, with faults on demand.

It speaks the parts of the Kubernetes API that LiveState uses, over real HTTP, so
the reflectors are tested through their real client. Faults are queued per
collection path and consumed by the next request to it.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonpatch

from webhook.cluster.authorizer import SUBJECT_ACCESS_REVIEWS

# Collection path -> the path of one item in it.
COLLECTIONS = {
    "/api/v1/namespaces": "/api/v1/namespaces/{name}",
    "/api/v1/nodes": "/api/v1/nodes/{name}",
    "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions": "/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions/{name}",
    "/apis/multihome.io/v1alpha1/attachmentrules": "/apis/multihome.io/v1alpha1/attachmentrules/{name}",
    "/api/v1/pods": "/api/v1/namespaces/{namespace}/pods/{name}",
    "/apis/networking.k8s.io/v1/networkpolicies": "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}",
    "/apis/coordination.k8s.io/v1/leases": "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}",
    "/apis/k8s.cni.cncf.io/v1beta1/multi-networkpolicies": "/apis/k8s.cni.cncf.io/v1beta1/namespaces/{namespace}/multi-networkpolicies/{name}",
    "/api/v1/secrets": "/api/v1/namespaces/{namespace}/secrets/{name}",
    "/apis/events.k8s.io/v1/events": "/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}",
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}",
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations": "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}",
}


def _item_pattern(template: str) -> re.Pattern[str]:
    return re.compile(
        "^"
        + template.replace("{namespace}", "(?P<namespace>[^/]+)").replace("{name}", "(?P<name>[^/]+)")
        + "(?:/status)?$"  # the status subresource: written as a merge into the object
    )


ITEM_PATTERNS = {collection: _item_pattern(template) for collection, template in COLLECTIONS.items()}


@dataclass
class Collection:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    compacted: int = 0
    served: bool = True
    faults: deque[tuple[str, float]] = field(default_factory=deque)


class FakeApiServer:
    """The API server's state; `serve()` starts HTTP on a free loopback port."""

    def __init__(self, bookmark_interval: float = 0.5) -> None:
        self.version = 100
        self.lock = threading.Condition()
        self.collections = {path: Collection() for path in COLLECTIONS}
        self.bookmark_interval = bookmark_interval
        self.requests: list[str] = []
        # Lists being read in pages: snapshot id -> (resourceVersion, items).
        self.snapshots: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self.pages_served = 0
        self.expire_continues = 0  # continue tokens to refuse with 410 Expired, whatever their age
        self.httpd: ThreadingHTTPServer | None = None

    # --- the tests' side ---------------------------------------------------------------
    def put(self, collection: str, obj: dict[str, Any]) -> None:
        """Create or update an object (an ADDED or MODIFIED event)."""
        with self.lock:
            self.version += 1
            store = self.collections[collection]
            key = _key(obj)
            kind = "MODIFIED" if key in store.objects else "ADDED"
            obj = json.loads(json.dumps(obj))
            # A uid as the API server gives one: kept while the object lives, new once it is recreated.
            before = store.objects.get(key, {}).get("metadata", {}).get("uid")
            obj.setdefault("metadata", {}).setdefault("uid", before or str(uuid.uuid4()))
            obj["metadata"]["resourceVersion"] = str(self.version)
            store.objects[key] = obj
            store.events.append((self.version, kind, obj))
            self.lock.notify_all()

    def delete(self, collection: str, namespace: str, name: str) -> None:
        with self.lock:
            self.version += 1
            store = self.collections[collection]
            obj = store.objects.pop((namespace, name))
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
            store.events.append((self.version, "DELETED", obj))
            self.lock.notify_all()

    def compact(self, collection: str) -> None:
        """Compact the history: a watch that starts from an older resourceVersion gets 410 Gone.

        Watches already open go on receiving events, as they do from etcd.
        """
        with self.lock:
            self.collections[collection].compacted = self.version
            self.lock.notify_all()

    def freeze_next_watch(self, collection: str, timeout: float = 5.0) -> None:
        """Make the next watch on `collection` deliver nothing, and wait until it has started."""
        self.fault(collection, "freeze")
        deadline = time.monotonic() + timeout
        while self.collections[collection].faults and time.monotonic() < deadline:
            time.sleep(0.01)

    def fault(self, collection: str, kind: str, value: float = 0.0) -> None:
        """Queue a fault for the next request to `collection`: 500, drop, gone, slow, freeze."""
        with self.lock:
            self.collections[collection].faults.append((kind, value))
            self.lock.notify_all()

    def set_served(self, collection: str, served: bool) -> None:
        """Install (True) or remove (False) the CRD behind a collection."""
        with self.lock:
            self.collections[collection].served = served
            self.lock.notify_all()

    # --- HTTP -------------------------------------------------------------------------
    def serve(self) -> int:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, each answer on a
            # kept-alive connection waited out the client's delayed ACK (40 ms), as no API server does.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server.handle(self)

            def do_POST(self) -> None:
                server.handle_write(self, "POST")

            def do_PUT(self) -> None:
                server.handle_write(self, "PUT")

            def do_PATCH(self) -> None:
                server.handle_write(self, "PATCH")

            def do_DELETE(self) -> None:
                server.handle_write(self, "DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return int(self.httpd.server_address[1])

    def close(self) -> None:
        with self.lock:
            self.version += 1
            self.lock.notify_all()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def kubeconfig(self, directory: Path, port: int) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                }
            )
        )
        return path

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append(handler.path)
        collection = url.path if url.path in self.collections else None
        if collection is None:
            self._get_item(handler, url.path)
            return
        store = self.collections[collection]
        with self.lock:
            fault = store.faults.popleft() if store.faults else None
            served = store.served
        if fault and fault[0] == "slow":
            time.sleep(fault[1])
        if fault and fault[0] == "500":
            _send_json(handler, 500, {"kind": "Status", "code": 500, "message": "etcd leader changed"})
            return
        if not served:
            _send_json(
                handler,
                404,
                {
                    "kind": "Status",
                    "code": 404,
                    "message": "the server could not find the requested resource",
                },
            )
            return
        if query.get("watch") == "true":
            self._watch(handler, store, query, fault)
        else:
            self._list(handler, store, query)

    def _list(self, handler: BaseHTTPRequestHandler, store: Collection, query: dict[str, str]) -> None:
        """A list, in pages when asked (`limit`, `continue`) as the API server serves them.

        Every page of one list comes from the snapshot its first page was taken from, as
        etcd serves them at the first page's revision; a continue token from before the
        collection's last compaction gets 410 Expired, as the API server answers it.
        """
        token = query.get("continue")
        if token:
            with self.lock:
                snapshot = self.snapshots.get(token.split(":")[0])
                expire, self.expire_continues = self.expire_continues > 0, max(0, self.expire_continues - 1)
            if snapshot is None or snapshot[0] < store.compacted or expire:
                _send_json(
                    handler,
                    410,
                    {
                        "kind": "Status",
                        "code": 410,
                        "reason": "Expired",
                        "message": "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.",
                    },
                )
                return
            version, items = snapshot
            offset = int(token.split(":")[1])
        else:
            wanted = dict(
                item.split("=", 1) for item in query.get("labelSelector", "").split(",") if "=" in item
            )
            with self.lock:
                items = [
                    o
                    for key, o in sorted(store.objects.items())
                    if wanted.items() <= (o.get("metadata", {}).get("labels") or {}).items()
                ]
                version = self.version
            offset = 0
        limit = int(query.get("limit") or 0) or len(items)
        page = items[offset : offset + limit]
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if offset + limit < len(items):
            snapshot_id = token.split(":")[0] if token else f"{version}-{len(self.snapshots)}"
            with self.lock:
                self.snapshots[snapshot_id] = (version, items)
            metadata["continue"] = f"{snapshot_id}:{offset + limit}"
            metadata["remainingItemCount"] = len(items) - offset - limit
        elif token:
            with self.lock:
                self.snapshots.pop(token.split(":")[0], None)
        self.pages_served += 1
        _send_json(handler, 200, {"kind": "List", "metadata": metadata, "items": page})

    def handle_write(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Create, replace, merge-patch or delete one object, with resourceVersion checks."""
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length)) if length else None
        json_patch = handler.headers.get("Content-Type") == "application/json-patch+json"
        strategic = handler.headers.get("Content-Type") == "application/strategic-merge-patch+json"
        self.requests.append(f"{method} {handler.path}")
        path = urlsplit(handler.path).path
        name = body.get("metadata", {}).get("name", "") if isinstance(body, dict) else ""
        if isinstance(body, dict) and not name and body.get("metadata", {}).get("generateName"):
            name = body["metadata"]["generateName"] + uuid.uuid4().hex[:5]
            body["metadata"]["name"] = name
        if method == "POST" and path == SUBJECT_ACCESS_REVIEWS:
            # The fake's authorizer allows no one; the real one answers in tests/envtest.
            _send_json(handler, 201, {**(body or {}), "status": {"allowed": False}})
            return
        target = path if method != "POST" else f"{path}/{name}"
        for collection, pattern in ITEM_PATTERNS.items():  # noqa: B007 - used after the loop
            match = pattern.match(target)
            if match:
                break
        else:
            _send_json(handler, 404, {"kind": "Status", "code": 404, "message": "no such resource"})
            return
        key = (match.groupdict().get("namespace") or "", match.group("name"))
        with self.lock:
            store = self.collections[collection]
            current = store.objects.get(key)
            if not store.served or (method != "POST" and current is None):
                _send_json(handler, 404, {"kind": "Status", "code": 404, "message": "not found"})
                return
            if method == "POST" and current is not None:
                _send_json(
                    handler,
                    409,
                    {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": "already exists"},
                )
                return
            wanted = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            if (
                method in ("PUT", "PATCH")
                and wanted
                and current is not None
                and wanted != current["metadata"]["resourceVersion"]
            ):
                _send_json(
                    handler,
                    409,
                    {
                        "kind": "Status",
                        "code": 409,
                        "reason": "Conflict",
                        "message": "the object has been modified",
                    },
                )
                return
        if method == "DELETE":
            self.delete(collection, *key)
            _send_json(handler, 200, {"kind": "Status", "status": "Success"})
            return
        if json_patch:
            try:
                obj = jsonpatch.apply_patch(current or {}, body or [])
            except jsonpatch.JsonPatchException as err:
                _send_json(handler, 422, {"kind": "Status", "code": 422, "message": str(err)})
                return
        else:
            obj = _merge(current or {}, body or {}) if method == "PATCH" else dict(body or {})
            if strategic:  # the one list merged by key that the tests patch: status.conditions, by type
                old = [
                    c for c in (current or {}).get("status", {}).get("conditions", []) if isinstance(c, dict)
                ]
                new = (body or {}).get("status", {}).get("conditions", [])
                kept = [c for c in old if c.get("type") not in {n.get("type") for n in new}]
                obj.setdefault("status", {})["conditions"] = kept + new
        obj.setdefault("metadata", {}).update({"name": key[1], **({"namespace": key[0]} if key[0] else {})})
        self.put(collection, obj)
        _send_json(handler, 201 if method == "POST" else 200, self.collections[collection].objects[key])

    def _get_item(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        for collection, pattern in ITEM_PATTERNS.items():
            match = pattern.match(path)
            store = self.collections[collection]
            if match and store.served:
                with self.lock:
                    obj = store.objects.get((match.groupdict().get("namespace") or "", match.group("name")))
                if obj is not None:
                    _send_json(handler, 200, obj)
                    return
        _send_json(handler, 404, {"kind": "Status", "code": 404, "message": "not found"})

    def _watch(
        self,
        handler: BaseHTTPRequestHandler,
        store: Collection,
        query: dict[str, str],
        fault: tuple[str, float] | None,
    ) -> None:
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
        # Chunked, one event a chunk, as the API server streams a watch.
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            self._stream(handler, store, since, deadline, fault)
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            return

    def _stream(
        self,
        handler: BaseHTTPRequestHandler,
        store: Collection,
        since: int,
        deadline: float,
        fault: tuple[str, float] | None,
    ) -> None:
        if (fault and fault[0] == "gone") or since < store.compacted:
            self._write(
                handler,
                {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "code": 410,
                        "reason": "Expired",
                        "message": "too old resource version",
                    },
                },
            )
            return
        sent, drop_after = 0, int(fault[1]) if fault and fault[0] == "drop" else -1
        frozen = bool(fault and fault[0] == "freeze")
        last_bookmark = time.monotonic()
        while time.monotonic() < deadline:
            with self.lock:
                pending = [] if frozen else [(v, k, o) for v, k, o in store.events if v > since]
                if not pending and not (self.httpd and self.httpd.socket.fileno() < 0):
                    self.lock.wait(timeout=min(self.bookmark_interval, max(0.0, deadline - time.monotonic())))
                    pending = [] if frozen else [(v, k, o) for v, k, o in store.events if v > since]
                version = self.version
            for event_version, kind, obj in pending:
                if sent == drop_after:
                    handler.connection.shutdown(2)  # mid-stream, without a goodbye
                    return
                if not self._write(handler, {"type": kind, "object": obj}):
                    return
                since, sent = event_version, sent + 1
            if time.monotonic() - last_bookmark >= self.bookmark_interval:
                last_bookmark = time.monotonic()
                since = max(since, version) if not frozen else since
                bookmark = {"kind": "Bookmark", "metadata": {"resourceVersion": str(since)}}
                if not self._write(handler, {"type": "BOOKMARK", "object": bookmark}):
                    return

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, event: dict[str, Any]) -> bool:
        data = json.dumps(event).encode() + b"\n"
        try:
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()
        except OSError:
            return False
        return True


def _merge(current: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(current) if isinstance(current, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata", {})
    return str(metadata.get("namespace") or ""), str(metadata["name"])


def _send_json(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
