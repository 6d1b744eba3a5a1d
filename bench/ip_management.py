"""IP management at a scale-up: 1,000 Pods arriving over 50 nodes, EC2 calls and seconds until all are ready.

    python -m bench.ip_management [--nodes 50] [--pods 1000]

EC2 is moto's server behind the tests' counting proxy, the cluster the tests' API
server; one pass reads both whole, assigns each ENI's addresses in one call and sets
every Pod's multihome.io/secondary-ips condition. Seconds are moto's and the test
server's; the calls are what EC2 would count against the account's rate limits.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from policies.controllers.ip_manager import CONDITION, IpManager
from tests.ec2 import (
    CREDENTIALS,
    Ec2Proxy,
    add_node,
    attach_eni,
    client,
    ipvlan_nad,
    moto_server,
    network_status,
    vpc,
)
from tests.fake_apiserver import FakeApiServer
from webhook.aws.ec2 import Ec2Reader, ec2_client
from webhook.cluster.files import FileState
from webhook.cluster.kube import Endpoint, HttpKubeApi
from webhook.multus.annotations import NETWORK_STATUS

NAD = ipvlan_nad("dp", "team-a", {"type": "whereabouts", "range": "10.0.64.0/18"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--pods", type=int, default=1000)
    args = parser.parse_args()
    with moto_server() as url, tempfile.TemporaryDirectory() as work:
        proxy = Ec2Proxy(url)
        os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL_EC2=proxy.url)
        ec2 = client(url)
        primary, multus = vpc(ec2, "10.0.0.0/16", "10.0.0.0/20", "10.0.64.0/18")
        api = FakeApiServer()
        names = []
        for n in range(args.nodes):
            node = add_node(ec2, f"node-{n}", primary, instance_type="m5.24xlarge")
            attach_eni(ec2, node, multus, 1, f"10.0.{64 + n // 200}.{10 + n % 200}")
            api.put(
                "/api/v1/nodes", {"metadata": {"name": node.name}, "spec": {"providerID": node.provider_id}}
            )
            names.append(node.name)
        for i in range(args.pods):
            address = f"10.0.{100 + i // 250}.{1 + i % 250}"
            api.put(
                "/api/v1/pods",
                {
                    "metadata": {
                        "name": f"p{i}",
                        "namespace": "team-a",
                        "annotations": {NETWORK_STATUS: network_status("team-a/dp", address)},
                    },
                    "spec": {"nodeName": names[i % args.nodes]},
                },
            )
        kube = HttpKubeApi(Endpoint.load(api.kubeconfig(Path(work), api.serve())))
        manager = IpManager(
            kube, FileState([("bench", NAD)]), Ec2Reader(ec2_client(), ttl=0, rate=50, burst=50)
        )
        started = time.perf_counter()
        report = manager.run_once()
        seconds = time.perf_counter() - started
        ready = sum(
            1
            for obj in api.collections["/api/v1/pods"].objects.values()
            for c in obj.get("status", {}).get("conditions", [])
            if c["type"] == CONDITION and c["status"] == "True"
        )
        print(
            f"{args.pods:,} Pods over {args.nodes} nodes: {ready:,} ready after one pass of {seconds:.1f} s"
        )
        print("| EC2 action | calls |")
        print("| --- | ---: |")
        for action, calls in sorted(proxy.calls.items()):
            print(f"| {action} | {calls} |")
        print(f"| all | {sum(proxy.calls.values())} |")
        print(f"assigned {report.assigned:,} addresses; errors: {len(report.errors)}")
        api.close()
        proxy.close()


if __name__ == "__main__":
    main()
