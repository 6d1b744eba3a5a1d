"""Reading EC2: the facts behind the cluster's nodes, in a few batched, paginated calls.

The client is configured by the SDK's own chain and nothing else: credentials from
IRSA, EKS Pod Identity or the environment, `AWS_REGION`, and the endpoint override
`AWS_ENDPOINT_URL_EC2`. botocore retries throttled and failed calls in its adaptive
mode (which also slows itself down while EC2 throttles), and a token bucket here keeps
multihome's own rate below what other EC2 users of the account need.

A read costs, for N nodes on S subnets of T instance types: ceil(N/200) DescribeInstances
and DescribeNetworkInterfaces pages (more when a page is full), one DescribeSubnets
per 200 subnets, one GetSubnetCidrReservations per subnet, and one DescribeInstanceTypes
per 100 types; never a call per Pod. Facts are kept `ttl` seconds for the same nodes.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Final

import boto3
import botocore.config
import botocore.exceptions

from webhook.aws.facts import Ec2Facts, Eni, Instance, IPNetwork, Subnet

BATCH: Final = 200  # values per filter, EC2's limit
TYPES_BATCH: Final = 100  # DescribeInstanceTypes takes up to 100 names
THROTTLED: Final = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
REFUSED: Final = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})

# Who is told of each call: (EC2 action, "ok" | "throttled" | "refused" | "error").
CallObserver = Callable[[str, str], None]


class Ec2Unavailable(Exception):
    """EC2 could not be read; the message says what was not read and why, in one line."""


class TokenBucket:
    """At most `rate` calls a second on average, `burst` at once; `take` waits for a token."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.burst, self.clock, self.sleep = rate, burst, clock, sleep
        self._tokens, self._at = float(burst), clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        """Wait until a call may go."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            self._tokens -= 1
        if wait > 0:
            self.sleep(wait)


def ec2_client(region: str | None = None, *, max_attempts: int = 8) -> Any:
    """An EC2 client from the SDK's own configuration chain, with adaptive retries."""
    config = botocore.config.Config(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        connect_timeout=5,
        read_timeout=20,
        user_agent_extra="multihome",
    )
    # boto3 reads AWS_DEFAULT_REGION and its config files; AWS_REGION, which the other SDKs and
    # EKS' credential webhooks set, is read here.
    region = region or os.environ.get("AWS_REGION") or None
    try:
        return boto3.session.Session().client("ec2", region_name=region, config=config)
    except botocore.exceptions.NoRegionError:
        raise Ec2Unavailable(
            "no AWS region: set AWS_REGION (chart value aws.region), or run where the SDK finds one"
        ) from None


class Ec2Reader:
    """The facts for a set of instances, read in batches and kept for `ttl` seconds."""

    def __init__(
        self,
        client: Any,
        *,
        ttl: float = 60.0,
        rate: float = 10.0,
        burst: int = 20,
        observe: CallObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.ttl, self.clock = client, ttl, clock
        self.observe = observe or (lambda action, outcome: None)
        self.bucket = TokenBucket(rate, burst)
        self._kept: tuple[frozenset[str], float, Ec2Facts] | None = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """Where the client sends its calls (AWS_ENDPOINT_URL_EC2 when set)."""
        return str(getattr(self.client.meta, "endpoint_url", "EC2"))

    def facts(self, instance_ids: Collection[str]) -> Ec2Facts:
        """EC2's facts for `instance_ids`: from the last read while fresh, else read now."""
        wanted = frozenset(instance_ids)
        with self._lock:
            kept = self._kept
            if kept is not None and kept[0] == wanted and self.clock() - kept[1] < self.ttl:
                return kept[2]
            facts = self._read(sorted(wanted))
            self._kept = (wanted, self.clock(), facts)
            return facts

    def _read(self, instance_ids: Sequence[str]) -> Ec2Facts:
        instances = {
            i["InstanceId"]: Instance(i["InstanceId"], str(i.get("InstanceType", "")))
            for batch in _batches(instance_ids, BATCH)
            for i in self._paged(
                "describe_instances",
                "Reservations",
                Filters=[{"Name": "instance-id", "Values": list(batch)}],
                MaxResults=1000,
                flatten="Instances",
            )
        }
        enis = [
            eni
            for batch in _batches(instance_ids, BATCH)
            for raw in self._paged(
                "describe_network_interfaces",
                "NetworkInterfaces",
                Filters=[{"Name": "attachment.instance-id", "Values": list(batch)}],
                MaxResults=1000,
            )
            if (eni := _eni(raw)) is not None
        ]
        subnets = self._subnets(sorted({e.subnet_id for e in enis}))
        types = sorted({i.type for i in instances.values() if i.type})
        limits = {
            t["InstanceType"]: int(t.get("NetworkInfo", {}).get("Ipv4AddressesPerInterface", 0))
            for batch in _batches(types, TYPES_BATCH)
            for t in self._paged("describe_instance_types", "InstanceTypes", InstanceTypes=list(batch))
        }
        return Ec2Facts(instances, tuple(enis), subnets, limits, read_at=time.time())

    def _subnets(self, subnet_ids: Sequence[str]) -> dict[str, Subnet]:
        found: dict[str, Subnet] = {}
        for batch in _batches(subnet_ids, BATCH):
            for raw in self._paged(
                "describe_subnets", "Subnets", Filters=[{"Name": "subnet-id", "Values": list(batch)}]
            ):
                subnet_id = raw["SubnetId"]
                reservations = self.call("get_subnet_cidr_reservations", SubnetId=subnet_id)
                explicit: list[IPNetwork] = [
                    ipaddress.ip_network(r["Cidr"], strict=False)
                    for key in ("SubnetIpv4CidrReservations", "SubnetIpv6CidrReservations")
                    for r in reservations.get(key, [])
                    if r.get("ReservationType") == "explicit"
                ]
                found[subnet_id] = Subnet(
                    subnet_id,
                    ipaddress.IPv4Network(raw["CidrBlock"]),
                    tuple(
                        ipaddress.IPv6Network(a["Ipv6CidrBlock"])
                        for a in raw.get("Ipv6CidrBlockAssociationSet", [])
                        if a.get("Ipv6CidrBlock")
                    ),
                    tuple(explicit),
                )
        return found

    def _paged(self, action: str, key: str, *, flatten: str = "", **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of `key` over all pages of `action` (and of `flatten` inside each)."""
        token = ""
        while True:
            page = self.call(action, **params, **({"NextToken": token} if token else {}))
            for item in page.get(key, []):
                if flatten:
                    yield from item.get(flatten, [])
                else:
                    yield item
            token = page.get("NextToken") or ""
            if not token:
                return

    def call(self, action: str, **params: Any) -> dict[str, Any]:
        """One EC2 call through the rate limit, observed, its failure an Ec2Unavailable in words."""
        name = "".join(part.title() for part in action.split("_"))
        self.bucket.take()
        try:
            answer: dict[str, Any] = getattr(self.client, action)(**params)
        except botocore.exceptions.ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            outcome = "throttled" if code in THROTTLED else "refused" if code in REFUSED else "error"
            self.observe(name, outcome)
            raise Ec2Unavailable(_said(name, code, err, self.endpoint)) from None
        except botocore.exceptions.NoCredentialsError:
            self.observe(name, "refused")
            raise Ec2Unavailable(
                "no AWS credentials: give the controller's ServiceAccount an IAM role (IRSA or "
                "EKS Pod Identity), or set AWS_* in the environment"
            ) from None
        except (botocore.exceptions.BotoCoreError, OSError) as err:
            self.observe(name, "error")
            raise Ec2Unavailable(f"cannot reach EC2 at {self.endpoint} ({name}): {err}") from None
        self.observe(name, "ok")
        return answer


def _said(action: str, code: str, err: botocore.exceptions.ClientError, endpoint: str) -> str:
    message = str(err.response.get("Error", {}).get("Message", "")).split("\n")[0][:200]
    if code in REFUSED:
        return (
            f"IAM refused ec2:{action} ({code}); `multihome aws iam-policy` prints the policy the "
            "controller's role needs"
        )
    if code in THROTTLED:
        return f"EC2 at {endpoint} still throttled ec2:{action} after the SDK's retries ({code})"
    return f"ec2:{action} failed at {endpoint}: {code}: {message}"


def _eni(raw: Mapping[str, Any]) -> Eni | None:
    attachment = raw.get("Attachment") or {}
    instance_id = attachment.get("InstanceId")
    if not instance_id:
        return None
    addresses = raw.get("PrivateIpAddresses") or []
    primary = str(raw.get("PrivateIpAddress") or "")
    return Eni(
        id=str(raw["NetworkInterfaceId"]),
        instance_id=str(instance_id),
        device_index=int(attachment.get("DeviceIndex", -1)),
        network_card_index=int(attachment.get("NetworkCardIndex", 0) or 0),
        mac=str(raw.get("MacAddress", "")).lower(),
        subnet_id=str(raw.get("SubnetId", "")),
        primary_ip=primary,
        secondary_ips=tuple(
            str(a["PrivateIpAddress"])
            for a in addresses
            if not a.get("Primary") and a.get("PrivateIpAddress")
        ),
        # In canonical form, as Pods' addresses are compared: EC2 may write leading zeros.
        ipv6_ips=tuple(
            str(ipaddress.ip_address(a["Ipv6Address"]))
            for a in raw.get("Ipv6Addresses") or []
            if a.get("Ipv6Address")
        ),
        tags={str(t["Key"]): str(t.get("Value", "")) for t in raw.get("TagSet") or [] if "Key" in t},
    )


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
