"""Node objects for kwok: shapes of real GPU servers, with loopback-only addresses.

Every address handed out here is inside 127.0.0.0/8 so that anything a test dials (a pod IP, a
host-network pod's node IP) stays on this machine:

- node N (0-based) of the cluster in address slot S gets InternalIP 127.1.S.(N + 1) (127.1.0.1, ...);
- node N gets spec.podCIDR 127.(128 + S).N.0/24 (127.128.0.0/24, 127.128.1.0/24, ...), which kwok
  uses to hand out pod IPs, so pod IPs are distinct per node and per pod.

The slot keeps clusters that run at the same time (two engineers' test sessions) apart: processes
started for their pods bind those addresses, and the same address in two clusters would collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_IP_BASE = ipaddress.IPv4Address("127.1.0.0")
POD_CIDR_SPACE = ipaddress.IPv4Network("127.128.0.0/9")
MAX_SLOTS = 128  # 127.128.0.0/9 holds 128 /16s, one per slot
MAX_NODES = 254  # 127.1.S.1 ... 127.1.S.254
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
CLUSTER_LABEL = "ome-operator.dev/local-cluster"


@dataclass(frozen=True)
class NodeShape:
    """What one simulated server offers the scheduler. Defaults: an 8x H200 server."""

    cpu: str = "224"
    memory: str = "2Ti"
    gpus: int = 8
    pods: int = 110
    ephemeral_storage: str = "28Ti"
    gpu_product: str = "NVIDIA-H200"
    gpu_memory_mib: int = 143771
    # GCP's a3-ultragpu-8g is the public instance type with exactly 8 H200s and 224 vCPUs.
    instance_type: str = "a3-ultragpu-8g"
    region: str = "local-1"
    zones: tuple[str, ...] = ("local-1a", "local-1b")
    extra_labels: dict[str, str] = field(default_factory=dict)

    def resources(self) -> dict[str, str]:
        res = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": self.ephemeral_storage,
        }
        if self.gpus:
            res["nvidia.com/gpu"] = str(self.gpus)
        return res


H200 = NodeShape()


def fallback_pod_cidr(slot: int = 0) -> str:
    """kwok's pool for pods on nodes that carry no podCIDR (nodes a test creates by hand)."""
    return f"127.127.{slot}.0/24"


def node_ip(index: int, slot: int = 0) -> str:
    if not 0 <= index < MAX_NODES or not 0 <= slot < MAX_SLOTS:
        raise ValueError(f"node index {index} / slot {slot} out of range ({MAX_NODES} nodes, {MAX_SLOTS} slots)")
    return str(NODE_IP_BASE + slot * 256 + index + 1)


def pod_cidr(index: int, slot: int = 0) -> str:
    base = POD_CIDR_SPACE.network_address + slot * 65536 + index * 256
    net = ipaddress.IPv4Network(f"{base}/24")
    if index > 255 or not net.subnet_of(POD_CIDR_SPACE):
        raise ValueError(f"node index {index} (slot {slot}) does not fit in {POD_CIDR_SPACE}")
    return str(net)


def node_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:03d}"


def node_manifest(cluster: str, prefix: str, index: int, shape: NodeShape, slot: int = 0) -> dict[str, Any]:
    """A Node as a kubelet would register it: status (capacity, addresses) is sent with the create."""
    name = node_name(prefix, index)
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        CLUSTER_LABEL: cluster,
        "node.kubernetes.io/instance-type": shape.instance_type,
        "topology.kubernetes.io/region": shape.region,
        "topology.kubernetes.io/zone": shape.zones[index % len(shape.zones)],
    }
    if shape.gpus:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": shape.gpu_product,
            "nvidia.com/gpu.count": str(shape.gpus),
            "nvidia.com/gpu.memory": str(shape.gpu_memory_mib),
        }
    labels |= shape.extra_labels
    resources = shape.resources()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]}},
        "spec": {"podCIDR": pod_cidr(index, slot), "podCIDRs": [pod_cidr(index, slot)]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": node_ip(index, slot)},
                {"type": "Hostname", "address": name},
            ],
        },
    }


@contextlib.contextmanager
def slots_lock(clusters_dir: Path) -> Iterator[None]:
    """Held while a cluster picks its address slot, so two starting at once never pick the same."""
    locks = clusters_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / "address-slots.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def free_slot(clusters_dir: Path, own_dir: Path) -> int:
    """The lowest address slot no other cluster's state claims (a stopped cluster's dir is gone)."""
    taken = set()
    for state_file in clusters_dir.glob("*/state.json"):
        if state_file.parent == own_dir:
            continue
        with contextlib.suppress(OSError, ValueError):
            taken.add(int(json.loads(state_file.read_text()).get("slot", 0)))
    for slot in range(MAX_SLOTS):
        if slot not in taken:
            return slot
    raise RuntimeError(f"all {MAX_SLOTS} address slots are taken by other clusters")
