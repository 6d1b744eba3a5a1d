"""The check catalogue: every check multihome makes, defined once.

Each check has a stable ID (never reused for another meaning, so pipelines can
allow-list it), a short name, a severity, a one-line title, why it matters on EKS and
how to fix it. The audit, its reports and `multihome checks` read them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

Severity = Literal["error", "warning", "info"]
# Where each check's page is: docs/checks/<ID>.md of the repository Chart.yaml names (sources).
DOCS_URL: Final = "https://github.com/multihome/multihome/blob/main/docs/checks"
SEVERITIES: Final[tuple[Severity, ...]] = ("error", "warning", "info")
NO_MANAGE_KEY: Final = "node.k8s.amazonaws.com/no_manage"
NO_MANAGE_TAG: Final = f"{NO_MANAGE_KEY}=true"


@dataclass(frozen=True)
class Check:
    """A kind of finding: its stable ID, short name, severity, what it means, why, and the fix."""

    id: str
    name: str
    severity: Severity
    title: str
    why: str
    fix: str
    # False for what only admission can see (a label change, a namespace grant under --global-namespaces).
    audited: bool = True
    # True for what needs EC2's facts: `audit --aws` and `controller --aws` report it.
    aws: bool = False

    @property
    def url(self) -> str:
        """The check's page in the docs."""
        return f"{DOCS_URL}/{self.id}.md"

    def explain(self) -> str:
        """The full text, as `multihome checks ID` prints it."""
        return "\n".join(
            [
                f"{self.id} {self.name} ({self.severity})",
                "",
                self.title + ".",
                "",
                "Why: " + self.why,
                "",
                "Fix: " + self.fix,
                "",
                "More: " + self.url,
            ]
        )


_VPC_CNI_WHY = (
    "EKS supports the Amazon VPC CNI only as the primary network. On a secondary interface "
    "its ipamd hands out addresses from the node's primary ENI pools, and Pods lose routes "
    "or addresses that other Pods also hold."
)

CHECKS: Final[Mapping[str, Check]] = {
    c.id: c
    for c in (
        Check(
            "MH001",
            "nad-vpc-cni-secondary",
            "error",
            "NetworkAttachmentDefinition uses the Amazon VPC CNI as a secondary network",
            _VPC_CNI_WHY,
            "use ipvlan or host-device on an ENI for secondary interfaces; keep aws-cni for eth0 only",
        ),
        Check(
            "MH002",
            "nad-invalid",
            "error",
            "NetworkAttachmentDefinition config or annotations are invalid",
            "Multus parses spec.config when a Pod attaches the network: a config it cannot read "
            "fails the sandbox of every such Pod, which stays in ContainerCreating.",
            "fix spec.config as the message says (valid JSON, a `type` or `plugins`, a known IPAM)",
        ),
        Check(
            "MH003",
            "nad-unsupported-type",
            "warning",
            "CNI type EKS does not support for secondary interfaces",
            "EKS documents ipvlan and host-device for Multus secondaries; sriov, macvlan, "
            "userspace and others need node support EKS does not give, and fail or misroute.",
            "use ipvlan (mode l2) or host-device on an ENI; or set --unsupported-types=warn if you run the plugin yourself",
        ),
        Check(
            "MH004",
            "nad-cidrs-unknown",
            "warning",
            "CIDRs of the network cannot be derived, so policies cannot be enriched",
            "Enrichment adds a network's CIDRs to NetworkPolicies; with DHCP or an IPAM multihome "
            "cannot read, it does not know them, and traffic on that interface is not covered.",
            'annotate the NAD with multihome.io/cidrs: "10.0.4.0/24,..."',
        ),
        Check(
            "MH005",
            "nad-eni-tag",
            "info",
            "the ENI behind the network must be tagged so the VPC CNI leaves it alone",
            "An untagged ENI is the VPC CNI's: its ipamd hands the ENI's addresses to ordinary "
            "Pods and may detach and delete it.",
            f"tag the ENI behind the master interface {NO_MANAGE_TAG}",
        ),
        Check(
            "MH010",
            "pod-networks-invalid",
            "error",
            "a Multus network annotation is malformed",
            "Multus cannot read the k8s.v1.cni.cncf.io/networks annotation, so the Pod's sandbox "
            "fails and the Pod never starts.",
            "write a comma-separated list of [namespace/]name[@interface], or a JSON list of selections",
        ),
        Check(
            "MH011",
            "pod-vpc-cni-reference",
            "error",
            "Pod attaches a network that uses the Amazon VPC CNI",
            _VPC_CNI_WHY,
            "attach an ipvlan or host-device network instead, or remove the reference",
        ),
        Check(
            "MH012",
            "pod-default-network",
            "error",
            "Pod replaces the VPC CNI as its primary network",
            "v1.multus-cni.io/default-network swaps eth0 away from the VPC CNI: the Pod loses its "
            "VPC address, Services and the node's routing.",
            "remove v1.multus-cni.io/default-network; add the network as a secondary one",
        ),
        Check(
            "MH013",
            "pod-duplicate-interface",
            "error",
            "two networks get the same interface name",
            "The second attachment fails: two interfaces cannot share a name in the Pod.",
            "give each network its own @interface (net1, net2, ...)",
        ),
        Check(
            "MH014",
            "pod-network-missing",
            "warning",
            "Pod references a NetworkAttachmentDefinition that does not exist",
            "Multus fails the Pod's sandbox when a NAD it names is missing.",
            "create the NAD in the namespace named, or fix the reference",
        ),
        Check(
            "MH015",
            "pod-network-drift",
            "warning",
            "Pod's networks differ from what its AttachmentRules give now",
            "Networks are injected at admission; a rule changed since keeps old Pods on old networks.",
            "restart the workload (kubectl rollout restart) so its Pods are admitted again",
        ),
        Check(
            "MH016",
            "workload-annotation-misplaced",
            "warning",
            "networks annotation on the workload, not its Pod template",
            "Multus reads the annotation on Pods only; on a Deployment's own metadata it does nothing.",
            "move the annotation to spec.template.metadata.annotations",
        ),
        Check(
            "MH017",
            "pod-network-not-granted",
            "warning",
            "Pod takes a network from another namespace that no AttachmentRule grants it",
            "A NAD in a team's namespace is that team's network; a Pod elsewhere that names it "
            "bypasses the platform team's choice of who gets which network (and its addresses).",
            "use a network in the Pod's namespace or a global namespace, or ask for an AttachmentRule "
            "that gives it; --namespace-isolation=strict denies instead of warning",
            audited=False,
        ),
        Check(
            "MH020",
            "rule-invalid",
            "error",
            "AttachmentRule does not compile",
            "A rule that does not compile injects nothing, and its namespaces silently lose their networks.",
            "fix the rule (multihome rules check FILE)",
        ),
        Check(
            "MH021",
            "rule-vpc-cni-reference",
            "error",
            "AttachmentRule gives a network that uses the Amazon VPC CNI",
            _VPC_CNI_WHY,
            "point the rule at an ipvlan or host-device network",
        ),
        Check(
            "MH022",
            "rule-network-missing",
            "warning",
            "AttachmentRule gives a network that does not exist",
            "Pods injected with a missing network fail their sandbox in Multus.",
            "create the NAD where the rule names it (or in every selected namespace), or remove it from the rule",
        ),
        Check(
            "MH023",
            "rule-selects-nothing",
            "warning",
            "AttachmentRule selects no namespace",
            "A rule that selects nothing does nothing; usually a label is misspelt or not yet set.",
            "label the namespaces (multihome.io/...) or fix spec.namespaceSelector",
        ),
        Check(
            "MH024",
            "rule-conflict",
            "warning",
            "AttachmentRules give the same interface in a namespace",
            "Two rules that give one interface name to the same Pod cannot both be applied.",
            "give each rule its own interface, or make their selectors disjoint",
        ),
        Check(
            "MH025",
            "namespace-label-forbidden",
            "error",
            "a user who may not changes a namespace's multihome.io/ labels",
            "AttachmentRules select namespaces by their labels: whoever sets a multihome.io/ label "
            "chooses which networks that namespace's Pods get. On EKS, namespace admins often may "
            "label their own namespaces, so the right is checked apart from the update itself.",
            "bind the ClusterRole multihome-label-admin (verb label on namespaces.multihome.io; "
            "resourceNames limit it to some namespaces), or add the user or a group to --label-admins",
            audited=False,
        ),
        Check(
            "MH030",
            "policy-not-enriched",
            "error",
            "NetworkPolicy covers multi-homed Pods but is not enriched",
            "NetworkPolicy controllers see the Pods' primary addresses only; traffic on the "
            "secondary interfaces is then not what the policy says.",
            "let the reconciler enrich it, or run multihome enrich -i on the manifest",
        ),
        Check(
            "MH031",
            "policy-enrichment-stale",
            "error",
            "NetworkPolicy enrichment is out of date",
            "A NAD's range or a rule changed after the policy was enriched; the policy allows "
            "old addresses and misses new ones.",
            "let the reconciler re-enrich it, or run multihome enrich -i again",
        ),
        Check(
            "MH040",
            "multus-default-not-vpc-cni",
            "error",
            "Multus' default network is not the Amazon VPC CNI",
            "On EKS the VPC CNI must stay every Pod's primary network; another default takes "
            "the VPC addresses away from all Pods.",
            "set Multus' clusterNetwork to the aws-cni config (the EKS Multus manifest does)",
        ),
        Check(
            "MH050",
            "nad-addresses-overlap",
            "error",
            "two NetworkAttachmentDefinitions hand out the same addresses",
            "Two IPAMs that do not know of each other give one address to two Pods.",
            "split the range with rangeStart/rangeEnd so the pools are disjoint",
        ),
        Check(
            "MH051",
            "nad-host-local-per-node",
            "warning",
            "host-local hands out the same addresses on every node",
            "host-local keeps its allocations per node, so Pods on two nodes get the same address.",
            "give each node its own range, or use whereabouts for a cluster-wide pool",
        ),
        Check(
            "MH052",
            "nad-vpc-reserved-addresses",
            "error",
            "the range includes addresses the VPC reserves, or its own gateway",
            "AWS reserves the first four addresses and the last of every subnet; a Pod given one "
            "cannot send or receive on it.",
            "set rangeStart past the subnet's base + 3 and rangeEnd before its last address",
        ),
        Check(
            "MH053",
            "nad-range-nearly-full",
            "warning",
            "Pods attaching the network use over 80% of its range",
            "When the range runs out, new Pods that attach the network fail their sandbox.",
            "widen the range, or move some workloads to another network",
        ),
        Check(
            "MH054",
            "nad-range-exhausted",
            "error",
            "more Pods attach the network than its range has addresses",
            "Pods past the range's size cannot get an address and do not start.",
            "widen the range or reduce the Pods that attach the network",
        ),
        Check(
            "MH055",
            "nad-eni-secondary-ips",
            "info",
            "ipvlan L2 on a VPC subnet: the ENI must own the Pods' addresses as secondary IPs",
            "The VPC only routes an address to an ENI it is assigned to; EKS does no IP "
            "management on Multus ENIs.",
            "assign the Pods' addresses to the ENI (aws ec2 assign-private-ip-addresses), or let an IP manager do it",
        ),
        Check(
            "MH056",
            "nad-cidrs-annotation-disagrees",
            "warning",
            "the multihome.io/cidrs annotation disagrees with the IPAM config",
            "Enrichment uses the annotation; when it disagrees with the addresses Pods get, "
            "policies allow the wrong ones.",
            "fix or remove the multihome.io/cidrs annotation",
        ),
        Check(
            "MH060",
            "eni-not-no-manage",
            "error",
            "an ENI carrying a Multus master interface lacks node.k8s.amazonaws.com/no_manage=true",
            "Untagged, the VPC CNI's ipamd takes the ENI for its own: it hands the ENI's addresses "
            "to ordinary Pods and may detach and delete it, and the Multus network goes with it.",
            f"tag it: aws ec2 create-tags --resources ENI_ID --tags Key={NO_MANAGE_KEY},Value=true "
            "(before the node joins, in the launch template, so ipamd never sees it untagged)",
            aws=True,
        ),
        Check(
            "MH061",
            "eni-for-master-unknown",
            "error",
            "a node where a Pod attaches a NAD has no ENI for its master interface, or two that could be it",
            "ethN is the ENI at device index N; with none the Pod's interface has nothing under it, "
            "and with two (two network cards, or no device index to go by) which one routes is a guess.",
            "attach one ENI per Multus master at the device index its name says (eth1 at index 1), "
            "or let Multus report the interface's MAC in network-status",
            aws=True,
        ),
        Check(
            "MH062",
            "nad-range-outside-eni-subnet",
            "error",
            "a NAD's allocatable addresses lie outside the subnet of the ENI that carries its master",
            "The VPC routes only addresses of the ENI's subnet to it: a Pod given an address outside "
            "it has a secondary interface that nothing reaches.",
            "move the NAD's range into the ENI's subnet, or attach an ENI from the subnet the range is in",
            aws=True,
        ),
        Check(
            "MH063",
            "pod-ip-not-on-eni",
            "error",
            "a Pod's secondary address is not assigned to the ENI that carries it",
            "With ipvlan on an ENI, the VPC delivers a Pod's address only once EC2 has it assigned "
            "to that ENI as a secondary private IP; EKS does no IP management on Multus ENIs.",
            "assign it: aws ec2 assign-private-ip-addresses --network-interface-id ENI_ID "
            "--private-ip-addresses ADDRESS --allow-reassignment (or run the controller with --ip-management)",
            aws=True,
        ),
        Check(
            "MH064",
            "eni-stale-address",
            "warning",
            "an address assigned on a no_manage ENI that no Pod holds",
            "Helpers that assign addresses from each Pod never take them back: stale ones pile up "
            "until the ENI reaches its instance type's limit and new Pods' addresses cannot be assigned.",
            "unassign it: aws ec2 unassign-private-ip-addresses --network-interface-id ENI_ID "
            "--private-ip-addresses ADDRESS (the controller's --ip-management sweep does)",
            aws=True,
        ),
        Check(
            "MH065",
            "nad-range-not-reserved",
            "warning",
            "a NAD's range is not covered by an explicit subnet CIDR reservation",
            "EC2 hands out free addresses of a subnet to any ENI that asks, the VPC CNI's included: "
            "an address of the NAD's range can go to another ENI, and then two interfaces claim it.",
            "reserve the range: aws ec2 create-subnet-cidr-reservation --subnet-id SUBNET_ID "
            "--cidr RANGE --reservation-type explicit",
            aws=True,
        ),
        Check(
            "MH066",
            "eni-addresses-exceed-limit",
            "error",
            "the Pods' secondary addresses on an ENI would exceed its instance type's addresses per interface",
            "EC2 refuses to assign addresses past the instance type's limit per interface: the Pods "
            "past it get addresses that never route.",
            "spread the Pods over more nodes or ENIs, or use an instance type with more addresses per interface",
            aws=True,
        ),
    )
}


def check(check_id: str) -> Check:
    """The check `check_id` (case-insensitive); ValueError naming the known IDs otherwise."""
    found = CHECKS.get(check_id.upper())
    if found is None:
        raise ValueError(f"no check {check_id}: multihome checks lists them ({', '.join(CHECKS)})")
    return found
