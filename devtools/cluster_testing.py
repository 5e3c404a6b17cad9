"""What integration tests get from the session `cluster` fixture, and polling helpers for them.

Tests poll with deadlines (`wait_for`), never bare sleeps, and clean up what they create
(`temp_namespace`).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from devtools.cluster import kubectl_path

T = TypeVar("T")


class WaitTimeout(AssertionError):
    pass


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.25,
    what: str = "condition",
) -> T:
    """Call `probe` until it returns something truthy; return that. The last value seen goes into
    the failure message, so a timeout says what the cluster looked like instead of just "False"."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


@dataclass(frozen=True)
class ClusterHandle:
    """A running cluster as tests see it. `owned` is False when reusing OME_TEST_KUBECONFIG."""

    kubeconfig: Path
    audit_log: Path | None = None
    owned: bool = True

    def api_client(self) -> Any:
        """A fresh `kubernetes.client.ApiClient` for the admin user (system:masters)."""
        from kubernetes import config

        # The kubernetes package's stubs leave this function untyped.
        new_client: Any = config.new_client_from_config
        return new_client(config_file=str(self.kubeconfig))

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(kubectl_path()), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def server(self) -> tuple[str, Path]:
        """The apiserver URL and its CA file, for clients that bring their own credentials."""
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        cluster = cfg["clusters"][0]["cluster"]
        return cluster["server"], Path(cluster["certificate-authority"])

    def audit_events(self) -> list[dict[str, Any]]:
        """Audit events so far: write verbs only, at Metadata level (see devtools.cluster.AUDIT_POLICY)."""
        if self.audit_log is None or not self.audit_log.exists():
            raise FileNotFoundError("this cluster has no audit log (reused via OME_TEST_KUBECONFIG?)")
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    @contextlib.contextmanager
    def temp_namespace(self, prefix: str = "t") -> Iterator[str]:
        """A fresh namespace with its default ServiceAccount in place; deleted afterwards."""
        from kubernetes import client

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        with self.api_client() as api:
            core: Any = client.CoreV1Api(api)
            core.create_namespace({"metadata": {"name": name}})
            try:
                # Pods are refused until kube-controller-manager has made the `default` ServiceAccount.
                wait_for(
                    lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
                    timeout=30,
                    what=f"ServiceAccount {name}/default",
                )
                yield name
            finally:
                with contextlib.suppress(client.ApiException):
                    core.delete_namespace(name)
