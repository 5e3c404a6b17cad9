"""`ome-operator download`: the program of the model-download Job.

    ome-operator download STORAGE_URI --dest DIR [--revision REV] [--workers N] [--allow-pickle]
        [--progress-configmap NAMESPACE/NAME] [--progress-interval S] [--kubeconfig PATH]
        [--node-name NAME] [--termination-log PATH] [--stall-timeout S] [--max-retries N]
        [--confine-root ROOT]
        [--peer-address ADDR] [--peer-port N] [--peer-linger S]

Environment: HF_ENDPOINT (the hub; default huggingface_hub's), HF_TOKEN (the only source of the
token), NODE_NAME (default of --node-name), POD_IP (default of --peer-address: with it, the Jobs of
one model fetch each file from the hub once and from each other otherwise, see peer.py), TERMINATION_MESSAGE_PATH (default of
--termination-log), KUBECONFIG (outside a pod; inside, the ServiceAccount is used).

STORAGE_URI and where the model ends up:
- hf://org/repo[@rev]: downloaded and verified into --dest; with --confine-root, --dest must be
  strictly under ROOT, reached without a symlink, and hold none (downloader/confine.py), checked
  before anything is written;
- local:///path: validated in place; --dest is not used;
- pvc://[ns:]claim/sub: the Job mounts the claim at --dest; the model is validated at --dest/sub;
- s3://, oci://, gs://, az://: every object under the prefix, downloaded and verified into --dest
  (endpoint, region and credentials from the environment: see `downloader.stores`).

Exit codes: 0 every file verified in place; 1 failed, a retry may succeed (network, verification);
2 usage error; 3 failed permanently (bad URI, not found, no access, pickle refused, not a model, no
space), so the Job's podFailurePolicy can stop retrying on 3.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from ome_operator.api.storage_uri import (
    HfUri,
    LocalUri,
    ObjectStoreUri,
    PvcUri,
    StorageUriError,
    effective_revision,
    parse_storage_uri,
)
from ome_operator.downloader.confine import ConfinementError, resolve_confined_dest
from ome_operator.downloader.kubeapi import ConfigMapPublisher, parse_configmap_ref, resolve_target
from ome_operator.downloader.listing import ListingError
from ome_operator.downloader.metadata import ModelFormatError
from ome_operator.downloader.peer import DEFAULT_LINGER_S, DEFAULT_PEER_PORT
from ome_operator.downloader.pipeline import DeliveryError, HfRequest, PeerSettings, download_hf, validate_mounted
from ome_operator.downloader.progress import Progress, Reporter
from ome_operator.downloader.report import Redactor, configure_logging, env_token, write_termination_message
from ome_operator.downloader.reuse import seed_from
from ome_operator.downloader.stores import StoreRequest, download_store, store_secrets

LOG = logging.getLogger("ome_operator.downloader")

EXIT_OK, EXIT_RETRYABLE, EXIT_USAGE, EXIT_PERMANENT = 0, 1, 2, 3
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "storage_uri",
        metavar="STORAGE_URI",
        help="hf://org/repo[@rev] | local:///path | pvc://[ns:]claim/sub | s3:// | oci:// | gs:// | az://",
    )
    parser.add_argument("--dest", type=Path, help="hf: download directory; pvc: the claim's mount point")
    parser.add_argument("--revision", help="branch, tag or commit (default: the URI's @rev, else main)")
    parser.add_argument("--workers", type=_positive_int, default=8, help="files fetched in parallel (default 8)")
    parser.add_argument("--allow-pickle", action="store_true", help="also fetch pickle formats (*.bin, *.pt, ...)")
    parser.add_argument("--progress-configmap", metavar="NAMESPACE/NAME", help="ConfigMap to publish progress to")
    parser.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress reports")
    parser.add_argument("--kubeconfig", help="kubeconfig for publishing progress outside a pod")
    parser.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node's name (env NODE_NAME)")
    parser.add_argument(
        "--termination-log",
        default=os.environ.get("TERMINATION_MESSAGE_PATH", DEFAULT_TERMINATION_LOG),
        help="where the JSON result goes (env TERMINATION_MESSAGE_PATH; default /dev/termination-log)",
    )
    parser.add_argument("--stall-timeout", type=float, default=60.0, help="give up on a connection silent this long")
    parser.add_argument("--max-retries", type=int, default=10, help="retries per file and per hub call")
    parser.add_argument(
        "--confine-root",
        metavar="ROOT",
        help="refuse (exit 3) a --dest that is not strictly under ROOT or is reached through a symlink",
    )
    parser.add_argument(
        "--peer-address",
        default=os.environ.get("POD_IP") or None,
        help="share files with the model's other Jobs, serving on this address (env POD_IP); "
        "needs --progress-configmap and --node-name",
    )
    parser.add_argument("--peer-port", type=int, default=DEFAULT_PEER_PORT, help="0: any free port")
    parser.add_argument(
        "--peer-linger", type=float, default=DEFAULT_LINGER_S, help="longest wait serving peers after finishing"
    )
    parser.add_argument(
        "--reuse-from",
        type=Path,
        help="hf: another model's verified copy on this node; identical files are linked, not fetched",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def run(args: argparse.Namespace) -> int:
    # huggingface_hub otherwise fetches an "agent harness" registry from the hub on first use and
    # caches it under $HOME; a download Job needs neither (read when it is first imported).
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    token = env_token()
    redactor = Redactor([token, *store_secrets()])
    configure_logging(redactor, verbose=args.verbose)
    outcome = _Outcome(args, redactor)
    try:
        return outcome.succeed(_deliver(args, token, outcome.progress))
    except (StorageUriError, ListingError, ModelFormatError, DeliveryError, ConfinementError) as exc:
        return outcome.fail(exc, permanent=getattr(exc, "permanent", True))
    except Exception as exc:
        LOG.error("unexpected error:\n%s", "".join(traceback.format_exception(exc)))
        return outcome.fail(exc, permanent=False)


class _Outcome:
    """Progress while the run lasts, then the result: the final phase in the progress ConfigMap,
    the summary in the termination message and the log."""

    def __init__(self, args: argparse.Namespace, redactor: Redactor) -> None:
        self.redactor = redactor
        self.termination = _termination_path(args.termination_log)
        self.progress = Progress()
        self.publisher = _publisher(args, redactor)
        self.reporter = Reporter(self.progress, self.publisher, args.progress_interval)
        self.started = time.monotonic()
        self.base: dict[str, Any] = {"storageUri": args.storage_uri}
        if args.node_name:
            self.base["node"] = args.node_name
        self.reporter.start()

    def succeed(self, result: dict[str, Any]) -> int:
        summary = {**self.base, **result, "seconds": round(time.monotonic() - self.started, 2)}
        self._finish("Succeeded", summary, None)
        LOG.info("done: %s", self.redactor.json(summary))
        return EXIT_OK

    def fail(self, exc: BaseException, permanent: bool) -> int:
        message = str(exc) or type(exc).__name__
        summary = {**self.base, "status": "Failed", "error": message, "permanent": permanent}
        if isinstance(exc, DeliveryError) and exc.file:
            summary["file"] = exc.file
        if self.progress.commit:
            summary["commit"] = self.progress.commit
        summary["seconds"] = round(time.monotonic() - self.started, 2)
        self._finish("Failed", summary, message)
        LOG.error("download failed: %s", message)
        return EXIT_PERMANENT if permanent else EXIT_RETRYABLE

    def _finish(self, phase: str, summary: dict[str, Any], message: str | None) -> None:
        self.reporter.stop(phase, message=self.redactor(message) if message else None)
        write_termination_message(self.termination, summary, self.redactor)


def _deliver(args: argparse.Namespace, token: str | None, progress: Progress) -> dict[str, Any]:
    uri = parse_storage_uri(args.storage_uri)
    if isinstance(uri, LocalUri):
        return validate_mounted(Path(uri.path), args.allow_pickle, progress)
    if args.dest is None:
        raise StorageUriError(f"{uri}: --dest is required")
    if isinstance(uri, PvcUri):
        if not os.path.ismount(args.dest):
            LOG.info("%s is not a mount point; validating it as the root of claim %s anyway", args.dest, uri.claim)
        return validate_mounted(args.dest / uri.sub_path, args.allow_pickle, progress)
    # Checked before anything is written, whatever the source (downloader/confine.py).
    dest = resolve_confined_dest(args.confine_root, args.dest) if args.confine_root else args.dest
    if isinstance(uri, ObjectStoreUri):
        store = StoreRequest(
            uri, dest, args.workers, args.allow_pickle, args.stall_timeout, args.max_retries, _user_agent()
        )
        return download_store(store, progress)
    assert isinstance(uri, HfUri)
    request = HfRequest(
        repo_id=uri.repo_id,
        revision=effective_revision(uri, args.revision),
        dest=dest,
        endpoint=hub_endpoint(),
        token=token,
        workers=args.workers,
        allow_pickle=args.allow_pickle,
        stall_timeout=args.stall_timeout,
        max_retries=args.max_retries,
        user_agent=_user_agent(),
        peers=_peer_settings(args),
    )
    if args.reuse_from is None:
        return download_hf(request, progress)
    seeded = seed_from(args.reuse_from, dest, uri.repo_id)
    result = download_hf(request, progress)
    # Seeded files that verified count as reused; the rest were fetched again.
    return {**result, "reusedFrom": str(args.reuse_from), "filesSeeded": seeded.files, "bytesSeeded": seeded.bytes}


def _peer_settings(args: argparse.Namespace) -> PeerSettings | None:
    if not args.peer_address:
        return None
    if not args.progress_configmap or not args.node_name:
        LOG.warning("peer sharing off: it needs --progress-configmap and --node-name")
        return None
    try:
        namespace, name = parse_configmap_ref(args.progress_configmap)
        target = resolve_target(args.kubeconfig)
    except (ValueError, OSError, KeyError) as exc:
        LOG.warning("peer sharing off: %s", exc)
        return None
    if target is None:
        LOG.warning("peer sharing off: no ServiceAccount token and no kubeconfig")
        return None
    return PeerSettings(
        target, namespace, name, args.node_name, args.peer_address, args.peer_port, max(0.0, args.peer_linger)
    )


def hub_endpoint() -> str:
    """HF_ENDPOINT, read now rather than when huggingface_hub was imported, else the library's default."""
    endpoint = os.environ.get("HF_ENDPOINT", "").strip()
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def _termination_path(raw: str) -> Path | None:
    # Outside a pod /dev/termination-log does not exist; do not create it in a developer's /dev.
    if raw == DEFAULT_TERMINATION_LOG and not os.path.exists(raw):
        return None
    return Path(raw) if raw else None


def _publisher(args: argparse.Namespace, redactor: Redactor) -> ConfigMapPublisher | None:
    if not args.progress_configmap:
        return None
    try:
        namespace, name = parse_configmap_ref(args.progress_configmap)
        target = resolve_target(args.kubeconfig)
    except (ValueError, OSError, KeyError) as exc:
        LOG.warning("progress publishing disabled: %s", exc)
        return None
    if target is None:
        LOG.warning("progress publishing disabled: no ServiceAccount token and no kubeconfig")
        return None
    return ConfigMapPublisher(target, namespace, name, args.node_name, redactor)


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ome-operator-downloader/{version('ome-operator')}"
    except PackageNotFoundError:
        return "ome-operator-downloader"
