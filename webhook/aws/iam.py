"""The least-privilege IAM policy for what multihome does on EC2, as `multihome aws iam-policy` prints it."""

from __future__ import annotations

from typing import Any, Final

from webhook.decisions.checks import NO_MANAGE_KEY

# What the audit and the controller read: Describe and Get calls, which take no resource ARN.
READ_ACTIONS: Final = (
    "ec2:DescribeInstances",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:GetSubnetCidrReservations",
    "ec2:DescribeInstanceTypes",
)
# What IP management writes, only on ENIs tagged no_manage=true.
IP_ACTIONS: Final = (
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "ec2:AssignIpv6Addresses",
    "ec2:UnassignIpv6Addresses",
)


def iam_policy(*, ip_management: bool = False) -> dict[str, Any]:
    """The IAM policy document for the controller's role; `ip_management` adds the address writes."""
    statements: list[dict[str, Any]] = [
        {"Sid": "MultihomeReadEc2", "Effect": "Allow", "Action": list(READ_ACTIONS), "Resource": "*"}
    ]
    if ip_management:
        statements.append(
            {
                "Sid": "MultihomeAssignOnNoManageEnis",
                "Effect": "Allow",
                "Action": list(IP_ACTIONS),
                "Resource": "arn:aws:ec2:*:*:network-interface/*",
                "Condition": {"StringEquals": {f"aws:ResourceTag/{NO_MANAGE_KEY}": "true"}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}
