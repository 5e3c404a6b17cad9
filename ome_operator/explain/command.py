"""`ome-operator explain [KIND] NAME [-n NAMESPACE]`: why an object is or is not Ready.

Exit codes: 0 Ready=True, 1 not Ready, 2 the object does not exist, the cluster cannot be reached
or the command line is wrong. Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import Any

EXIT_READY, EXIT_NOT_READY, EXIT_ERROR = 0, 1, 2
KINDS = {
    "InferenceService": ("inferenceservice", "inferenceservices", "isvc", "isvcs"),
    "ClusterBaseModel": ("clusterbasemodel", "clusterbasemodels", "cbm"),
    "BaseModel": ("basemodel", "basemodels", "bm"),
}
ALIASES = {alias: kind for kind, aliases in KINDS.items() for alias in aliases}
USAGE_KINDS = "inferenceservice (isvc, the default), clusterbasemodel (cbm) or basemodel (bm)"

DESCRIPTION = """Why an InferenceService or model is or is not Ready: its conditions, the failing pods or
download Jobs with their Events and log tails, and what to do next."""
EPILOG = """examples:
  ome-operator explain -n kimi-k2-instruct kimi-k2-instruct      an InferenceService
  ome-operator explain isvc/kimi-k2-instruct -n kimi-k2-instruct  the same, kubectl style
  ome-operator explain clusterbasemodel kimi-k2-instruct          a ClusterBaseModel and its downloads
  ome-operator explain basemodel -n team-a my-model              a BaseModel

exit codes: 0 Ready, 1 not Ready, 2 not found or the cluster cannot be reached
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.usage = "%(prog)s [KIND] NAME [-n NAMESPACE] [--kubeconfig FILE] [--operator-namespace NAMESPACE]"
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.add_argument(
        "target",
        nargs="+",
        metavar="[KIND] NAME",
        help=f"KIND NAME, KIND/NAME or NAME; KIND is {USAGE_KINDS}",
    )
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig context's)")
    parser.add_argument(
        "--kubeconfig",
        default=env("KUBECONFIG"),
        metavar="FILE",
        help="kubeconfig file (default: KUBECONFIG, else in-cluster, else ~/.kube/config)",
    )
    parser.add_argument(
        "--operator-namespace",
        default=env("OME_OPERATOR_NAMESPACE", "ome"),
        metavar="NAMESPACE",
        help="where ClusterBaseModel download Jobs run (default: OME_OPERATOR_NAMESPACE, else ome)",
    )


def parse_target(target: list[str]) -> tuple[str, str]:
    """(kind, name) from `NAME`, `KIND NAME` or `KIND/NAME`; ValueError says what is wrong."""
    if len(target) == 1 and "/" in target[0]:
        target = target[0].split("/", 1)
    if len(target) == 1:
        return "InferenceService", target[0]
    if len(target) != 2 or not target[1]:
        raise ValueError(f"expected [KIND] NAME, got {' '.join(target)!r}")
    alias = target[0].lower().removesuffix(".ome.io")
    if alias not in ALIASES:
        raise ValueError(f"unknown kind {target[0]!r}: use {USAGE_KINDS}")
    return ALIASES[alias], target[1]


def compute_context_namespace(kubeconfig: str | None) -> str:
    """The current context's namespace, as kubectl uses it; `default` without one."""
    from kubernetes import config

    contexts: Any = config.list_kube_config_contexts  # untyped in the kubernetes package
    try:
        _, active = contexts(config_file=kubeconfig)
    except Exception:  # no kubeconfig (in-cluster) or an unreadable one: connecting will say so
        return "default"
    return str(((active or {}).get("context") or {}).get("namespace") or "default")


def run(args: argparse.Namespace) -> int:
    try:
        kind, name = parse_target(list(args.target))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    namespace = None if kind == "ClusterBaseModel" else (args.namespace or compute_context_namespace(args.kubeconfig))
    try:
        lines = observe_and_explain(args.kubeconfig, kind, namespace, name, args.operator_namespace)
    except Exception as exc:  # one clear line instead of a traceback: unreachable, refused, no config
        print(f"error: {describe_failure(exc)}", file=sys.stderr)
        return EXIT_ERROR
    if lines is None:
        where = f" in namespace {namespace}" if namespace else ""
        print(f"error: {kind} {name} not found{where}", file=sys.stderr)
        return EXIT_ERROR
    code, text = lines
    print("\n".join(text))
    return code


def observe_and_explain(
    kubeconfig: str | None, kind: str, namespace: str | None, name: str, operator_namespace: str
) -> tuple[int, list[str]] | None:
    from ome_operator.kube.client import Kube, load_api_client
    from ome_operator.kube.reach import Gate

    from .compute import compute_exit_code, compute_explanation
    from .observe import observe_isvc, observe_model

    now = datetime.now(UTC)
    with load_api_client(kubeconfig) as api:
        kube = Kube(api, gate=Gate(announce=False))
        if kind == "InferenceService":
            evidence = observe_isvc(kube, namespace or "default", name, now)
        else:
            evidence = observe_model(kube, kind, namespace, name, operator_namespace, now)
    if evidence is None:
        return None
    return compute_exit_code(evidence.obj), compute_explanation(evidence)


def describe_failure(exc: Exception) -> str:
    from kubernetes.config import ConfigException

    from ome_operator.kube.client import ApiException, ApiUnavailable

    from .observe import describe_api_error

    if isinstance(exc, ApiUnavailable) and isinstance(exc.__cause__, Exception):
        exc = exc.__cause__  # no answer at all: say what the connection attempt met
    if isinstance(exc, ApiException):
        return f"the API server refused the request: {describe_api_error(exc)}"
    if isinstance(exc, ConfigException):
        return f"no cluster configured (set --kubeconfig or KUBECONFIG): {exc}"
    reason: Any = getattr(exc, "reason", None)  # urllib3's MaxRetryError carries the socket error here
    return f"cannot reach the cluster: {reason or exc}"
