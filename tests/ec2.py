"""EC2 for the tests: moto in server mode on loopback, behind a proxy that counts and breaks calls.

No real EC2 can run here, so moto plays it, as a separate process the SDK reaches over
HTTP through `AWS_ENDPOINT_URL_EC2`: signing, the query protocol, pagination and the
SDK's retries all run as against AWS. The proxy in front of it counts each call by its
`Action` and plays the faults EC2 has: throttling (`RequestLimitExceeded`, HTTP 503),
an action IAM refuses (`UnauthorizedOperation`, HTTP 403) and an endpoint that is down.
Where moto is kinder than EC2 (filters it ignores, limits it does not keep), the code
under test filters itself, and the tests say so.
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION}

_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error></Errors><RequestID>multihome-test</RequestID></Response>"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def moto_server() -> Iterator[str]:
    """`python -m moto.server` on a free loopback port; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Faults:
    """What the proxy does instead of forwarding: throttle, refuse an action, or be down."""

    throttle_until: float = 0.0  # time.monotonic(); until then every call is throttled
    refused: set[str] = field(default_factory=set)  # actions answered 403 UnauthorizedOperation
    down: bool = False  # close every connection at once


class Ec2Proxy:
    """An HTTP proxy in front of moto that counts calls by Action and plays EC2's faults."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.calls: Counter[str] = Counter()  # what reached EC2 (moto), by action
        self.answered: Counter[tuple[str, int]] = Counter()  # every answer, by action and status
        self.faults = Faults()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = urllib.parse.parse_qs(body.decode()).get("Action", [""])[0]
                proxy._serve(self, action, body)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="ec2-proxy", daemon=True).start()

    def _serve(self, handler: http.server.BaseHTTPRequestHandler, action: str, body: bytes) -> None:
        faults = self.faults
        if faults.down:
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if time.monotonic() < faults.throttle_until:
            self._answer(handler, action, 503, "RequestLimitExceeded", "Request limit exceeded.")
            return
        if action in faults.refused:
            message = f"You are not authorized to perform this operation. (ec2:{action})"
            self._answer(handler, action, 403, "UnauthorizedOperation", message)
            return
        connection = http.client.HTTPConnection(self.upstream.hostname or "", self.upstream.port, timeout=30)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")}
        connection.request("POST", handler.path, body=body, headers=headers)
        reply = connection.getresponse()
        data = reply.read()
        with self._lock:
            self.calls[action] += 1
        self._reply(handler, action, reply.status, reply.getheader("Content-Type") or "text/xml", data)
        connection.close()

    def _answer(
        self, handler: http.server.BaseHTTPRequestHandler, action: str, status: int, code: str, message: str
    ) -> None:
        self._reply(handler, action, status, "text/xml", _ERROR.format(code=code, message=message).encode())

    def _reply(
        self,
        handler: http.server.BaseHTTPRequestHandler,
        action: str,
        status: int,
        content_type: str,
        data: bytes,
    ) -> None:
        with self._lock:
            self.answered[action, status] += 1
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def client(url: str) -> Any:
    """A boto3 EC2 client straight to `url` (moto), for building the VPC a test needs."""
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


NO_MANAGE = [{"Key": "node.k8s.amazonaws.com/no_manage", "Value": "true"}]


@dataclass
class Node:
    """An EKS node as EC2 has it: its instance and the ENIs attached after eth0, by device index."""

    name: str
    instance_id: str
    enis: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def provider_id(self) -> str:
        return f"aws:///{REGION}a/{self.instance_id}"


def add_node(
    ec2: Any, name: str, subnet_id: str, *, instance_type: str = "m5.large", address: str | None = None
) -> Node:
    """An instance in `subnet_id` (its primary ENI at device index 0)."""
    params: dict[str, Any] = {"ImageId": "ami-12c6146b", "MinCount": 1, "MaxCount": 1}
    params |= {"InstanceType": instance_type, "SubnetId": subnet_id}
    if address:
        params["PrivateIpAddress"] = address
    instance = ec2.run_instances(**params)["Instances"][0]
    return Node(name, instance["InstanceId"])


def attach_eni(
    ec2: Any,
    node: Node,
    subnet_id: str,
    device_index: int,
    primary: str,
    *,
    tagged: bool = True,
    secondary: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A Multus ENI: created in `subnet_id` with `primary`, tagged no_manage (or not), attached at `device_index`."""
    params: dict[str, Any] = {"SubnetId": subnet_id, "PrivateIpAddress": primary}
    if tagged:
        params["TagSpecifications"] = [{"ResourceType": "network-interface", "Tags": NO_MANAGE}]
    eni: dict[str, Any] = ec2.create_network_interface(**params)["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=node.instance_id, DeviceIndex=device_index
    )
    if secondary:
        ec2.assign_private_ip_addresses(
            NetworkInterfaceId=eni["NetworkInterfaceId"], PrivateIpAddresses=list(secondary)
        )
    node.enis[device_index] = eni
    return eni


def ipvlan_nad(name: str, namespace: str, ipam: dict[str, Any], master: str = "eth1") -> dict[str, Any]:
    """A NetworkAttachmentDefinition of ipvlan (L2) on `master`, with `ipam`, as a user writes one."""
    config = {"cniVersion": "0.4.0", "type": "ipvlan", "master": master, "mode": "l2", "ipam": ipam}
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"config": json.dumps(config)},
    }


def network_status(network: str, address: str, mac: str = "") -> str:
    """Multus' network-status for a Pod: eth0 on the VPC CNI, net1 on `network` with `address`."""
    status: list[dict[str, Any]] = [
        {"name": "aws-cni", "interface": "eth0", "ips": ["10.0.1.50"], "default": True},
        {"name": network, "interface": "net1", "ips": [address], **({"mac": mac} if mac else {})},
    ]
    return json.dumps(status)


def use_ec2(monkeypatch: Any, proxy: Ec2Proxy, home: Path) -> None:
    """The SDK's own configuration chain pointed at `proxy`, with test credentials and nothing of ~/.aws."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-credentials"))
    for key in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(key, raising=False)


def vpc(ec2: Any, cidr: str, *subnets: str) -> list[str]:
    """A VPC of `cidr` and the IDs of its `subnets`, in order."""
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    return [ec2.create_subnet(VpcId=vpc_id, CidrBlock=s)["Subnet"]["SubnetId"] for s in subnets]
