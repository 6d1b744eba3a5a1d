"""What reading EC2 costs for a large cluster: calls and seconds for 500 nodes and 5,000 Pods.

    python -m bench.aws [--nodes 500] [--pods-per-node 10]

EC2 is moto's server on loopback behind the tests' counting proxy (tests/ec2.py), so
the figures are the SDK's real wire path; seconds are moto's, not AWS's, and are
shown beside the calls, which are what EC2 bills against the account's rate limits.
Each node has its eth1 ENI, tagged no_manage, with its Pods' addresses assigned.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import time

from policies.aws import aws_findings
from tests.ec2 import CREDENTIALS, Ec2Proxy, client, ipvlan_nad, moto_server, network_status, vpc
from webhook.aws.ec2 import Ec2Reader, ec2_client
from webhook.cluster.files import FileState
from webhook.decisions.snapshot import pod_info
from webhook.multus.annotations import NETWORK_STATUS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--pods-per-node", type=int, default=10)
    args = parser.parse_args()
    with moto_server() as url:
        proxy = Ec2Proxy(url)
        os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL_EC2=proxy.url)
        ec2 = client(url)
        primary, multus = vpc(ec2, "10.0.0.0/16", "10.0.0.0/20", "10.0.64.0/18")
        started = time.perf_counter()
        instances = [
            i["InstanceId"]
            for i in ec2.run_instances(
                ImageId="ami-12c6146b",
                MinCount=args.nodes,
                MaxCount=args.nodes,
                InstanceType="m5.4xlarge",
                SubnetId=primary,
            )["Instances"]
        ]
        base = int(ipaddress.IPv4Address("10.0.64.10"))
        pods, nodes = [], {}
        for n, instance in enumerate(instances):
            first = base + n * (args.pods_per_node + 1)
            addresses = [str(ipaddress.IPv4Address(first + 1 + k)) for k in range(args.pods_per_node)]
            eni = ec2.create_network_interface(
                SubnetId=multus,
                PrivateIpAddress=str(ipaddress.IPv4Address(first)),
                TagSpecifications=[
                    {
                        "ResourceType": "network-interface",
                        "Tags": [{"Key": "node.k8s.amazonaws.com/no_manage", "Value": "true"}],
                    }
                ],
            )["NetworkInterface"]["NetworkInterfaceId"]
            ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=instance, DeviceIndex=1)
            ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=addresses)
            nodes[f"node-{n}"] = instance
            for k, address in enumerate(addresses):
                obj = {
                    "metadata": {
                        "name": f"p-{n}-{k}",
                        "namespace": "team-a",
                        "annotations": {NETWORK_STATUS: network_status("team-a/dp", address)},
                    },
                    "spec": {"nodeName": f"node-{n}"},
                }
                pods.append(pod_info(obj))
        built = time.perf_counter() - started
        nad = ipvlan_nad("dp", "team-a", {"type": "whereabouts", "range": "10.0.64.0/18"})
        state = FileState([("bench", nad)])
        reader = Ec2Reader(ec2_client(), rate=50, burst=50)
        started = time.perf_counter()
        facts = reader.facts(nodes.values())
        read = time.perf_counter() - started
        started = time.perf_counter()
        findings = aws_findings(state, nodes, pods, facts)
        checked = time.perf_counter() - started
        print(f"{args.nodes} nodes, {len(pods):,} Pods, {len(facts.enis)} ENIs (built in {built:.0f} s)")
        print("| EC2 action | calls |")
        print("| --- | ---: |")
        for action, calls in sorted(proxy.calls.items()):
            print(f"| {action} | {calls} |")
        print(f"| all | {sum(proxy.calls.values())} |")
        print(
            f"read EC2: {read:.2f} s; MH06x checks over the Pods: {checked:.2f} s; findings: {len(findings)}"
        )
        proxy.close()


if __name__ == "__main__":
    main()
