"""`ome-operator run`: start the operator (kopf underneath), its probes and its metrics."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import getpass
import json
import logging
import os
import random
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ome_operator.render.context import Settings
from ome_operator.render.roots import add_model_root_arguments, resolve_model_root_settings

from .health import RECONCILE_DEADLINE, WATCH_DEADLINE, Health, KopfLogFilter, configure_kopf, stream_seconds_for

log = logging.getLogger("ome_operator")

ENV_HELP = """environment variables (each flag's default comes from its variable):
  KUBECONFIG              kubeconfig file; without it the in-cluster ServiceAccount is used
  OME_NAMESPACES          comma-separated namespaces to watch (default: all)
  OME_OPERATOR_NAMESPACE  namespace of cluster-model download Jobs (default: ome)
  OME_IMAGE               image that runs the download Jobs (the operator's own image)
  OME_HF_ENDPOINT         hub endpoint passed to download Jobs as HF_ENDPOINT
  OME_MODEL_ROOTS         comma-separated host directories models may live in (--model-root)
  OME_NAMESPACE_MODEL_DIR a BaseModel's directory under a root (--namespace-model-dir)
  OME_DOWNLOAD_BACKOFF_LIMIT   pod retries of a download Job before it fails (default 6)
  OME_DOWNLOAD_RETRY_DELAY     seconds before a failed download Job is recreated, doubling (default 30)
  OME_DOWNLOAD_SLOTS_PER_NODE  download Jobs a node runs at once (default 2)
  OME_PEERING             kopf peering name; two replicas with the same name elect one active
  OME_PEERING_PRIORITY    this replica's peering priority (default: random)
  OME_PEERING_LIFETIME    seconds a replica's peering record stays valid without a keep-alive
  OME_HEALTH_LISTEN       HOST:PORT serving /healthz, /readyz and /metrics
  OME_RESYNC_SECONDS      periodic re-check of every object
  OME_WORKERS             concurrent reconcile passes
  OME_WATCH_DEADLINE      seconds a watch may make no progress before /healthz fails
  OME_RECONCILE_DEADLINE  seconds one reconcile pass may run before /healthz fails
  OME_LOG_FORMAT          text or json
  OME_LOG_LEVEL           DEBUG, INFO, WARNING or ERROR
"""

# A cache stream silent for this share of the resync period is relisted: a change made meanwhile
# still reaches a pass within the period (the rest is the pass's own delay).
SILENCE_SHARE = 0.75

# Anything shaped like a credential is masked before a log line is written.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"hf_[A-Za-z0-9]{8,}"),
    re.compile(r"(?i)((?:token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
]


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


class RedactingFormatter(logging.Formatter):
    def __init__(self, json_lines: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if not self.json_lines:
            return redact(super().format(record))
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for extra in ("isvc", "model", "object"):
            if hasattr(record, extra):
                entry[extra] = getattr(record, extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ENV_HELP
    parser.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig file (default: in-cluster)")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[n for n in env("OME_NAMESPACES", "").split(",") if n],
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--operator-namespace",
        default=env("OME_OPERATOR_NAMESPACE", "ome"),
        help="namespace of cluster-model download Jobs",
    )
    parser.add_argument("--image", default=env("OME_IMAGE", Settings.image), help="image of the download Jobs")
    parser.add_argument("--hf-endpoint", default=env("OME_HF_ENDPOINT"), help="hub endpoint for download Jobs")
    add_model_root_arguments(parser)
    parser.add_argument(
        "--download-backoff-limit",
        type=int,
        default=int(env("OME_DOWNLOAD_BACKOFF_LIMIT", str(Settings.download_backoff_limit))),
        help="pod retries of a download Job before it fails",
    )
    parser.add_argument(
        "--download-retry-delay",
        type=float,
        default=float(env("OME_DOWNLOAD_RETRY_DELAY", str(Settings.download_retry_base_seconds))),
        help="seconds before a failed download Job is recreated; doubles per attempt (max 30 min)",
    )
    parser.add_argument(
        "--download-slots-per-node",
        type=int,
        default=int(env("OME_DOWNLOAD_SLOTS_PER_NODE", str(Settings.download_slots_per_node))),
        help="download Jobs a node runs at once; one is kept for models an InferenceService waits for",
    )
    parser.add_argument("--peering", default=env("OME_PEERING"), help="kopf peering name for HA (default: standalone)")
    parser.add_argument(
        "--peering-priority",
        type=int,
        default=int(env("OME_PEERING_PRIORITY", "0")) or random.randint(1, 2**30),
        help="priority among peers; the highest acts, the others stand by (default: random, so that "
        "replicas with the same settings never tie, which would pause all of them)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=int(env("OME_PEERING_LIFETIME", "10")),
        help="seconds a replica's peering record counts as alive without a keep-alive: a standby takes "
        "over at most this long after the active replica died (keep-alives go every lifetime - 5..10 s, "
        "at least every second)",
    )
    parser.add_argument(
        "--health-listen",
        default=env("OME_HEALTH_LISTEN", "127.0.0.1:8081"),
        help="HOST:PORT for /healthz, /readyz, /metrics",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(env("OME_RESYNC_SECONDS", "60")),
        help="periodic re-check interval",
    )
    parser.add_argument("--workers", type=int, default=int(env("OME_WORKERS", "4")), help="concurrent reconcile passes")
    parser.add_argument(
        "--watch-deadline",
        type=float,
        default=float(env("OME_WATCH_DEADLINE", str(WATCH_DEADLINE))),
        help="/healthz fails once a watch made no progress (no event, no re-established stream) for this "
        "many seconds; longer than an API outage the operator should ride out without a restart",
    )
    parser.add_argument(
        "--reconcile-deadline",
        type=float,
        default=float(env("OME_RECONCILE_DEADLINE", str(RECONCILE_DEADLINE))),
        help="/healthz fails once one reconcile pass has run for this many seconds",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default=env("OME_LOG_FORMAT", "text"), help="log line format"
    )
    parser.add_argument("--log-level", default=env("OME_LOG_LEVEL", "INFO"), help="log level")


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(json_lines=fmt == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kopf").setLevel(max(logging.INFO, root.level))
    # kopf logs every handler call at INFO; ours only enqueue, so that is noise.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, root.level))
    # urllib3 warns at every transparent retry of a connection; the gate reports the outage once.
    logging.getLogger("urllib3.connectionpool").setLevel(max(logging.ERROR, root.level))


def serve_health(listen: str, ready: threading.Event, problems: Callable[[], list[str]]) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, code, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
            elif self.path in ("/healthz", "/livez"):
                found = problems()
                code = 503 if found else 200
                body, ctype = ("\n".join(found).encode() if found else b"ok"), "text/plain"
            elif self.path == "/readyz":
                code = 200 if ready.is_set() else 503
                body, ctype = (b"ready" if code == 200 else b"starting"), "text/plain"
            else:
                body, code, ctype = b"not found", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def check_download_namespace(kube: Any, namespace: str) -> None:
    """Say once, at start-up, that ClusterBaseModel downloads cannot run (each model's status says it too)."""
    try:
        found = kube.get("Namespace", namespace)
    except Exception as exc:  # no right to read namespaces, or the API is down: the models will say
        log.debug("could not check the download namespace %r: %s", namespace, exc)
        return
    if found is None:
        log.error(
            'namespace "%s" does not exist: ClusterBaseModel downloads cannot run until it is created '
            "(kubectl create namespace %s), or start the operator with --operator-namespace",
            namespace,
            namespace,
        )


class PeeringState:
    """Whether kopf acts, from its peering log lines: kopf starts every peering (one clusterwide, or
    one per namespace) paused and says when it resumes or pauses one; it acts when none is paused."""

    def __init__(self, op: Any, peerings: int) -> None:
        self.op = op
        self.peerings = peerings
        self.paused = peerings
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            self.paused = self.peerings
            if self.paused == 0:
                self.op.activate()
            else:
                self.op.deactivate()

    def pause(self) -> None:
        with self.lock:
            self.paused = min(self.peerings, self.paused + 1)
            self.op.deactivate()

    def resume(self) -> None:
        with self.lock:
            self.paused = max(0, self.paused - 1)
            if self.paused == 0:
                self.op.activate()


def own_identity() -> str:
    """This process's name in the peering object; kept across restarts of kopf inside the process,
    so a restarted kopf does not meet its own old record as a rival."""
    pod = os.environ.get("POD_ID")
    return pod or f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}/{random.randint(0, 36**4):x}"


def run(args: argparse.Namespace) -> int:
    # Imported here: the download Jobs run the same CLI and should not pay for kopf at start-up.
    import kopf

    from ome_operator.kube.cache import Cache
    from ome_operator.kube.client import Kube, clone_api_client, load_api_client
    from ome_operator.kube.reach import Gate

    from .wiring import Operator, build_registry, cache_scopes

    setup_logging(args.log_format, args.log_level)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it too
    try:
        roots = resolve_model_root_settings(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    settings = Settings(
        operator_namespace=args.operator_namespace,
        image=args.image,
        hf_endpoint=args.hf_endpoint,
        download_backoff_limit=args.download_backoff_limit,
        download_retry_base_seconds=args.download_retry_delay,
        download_slots_per_node=max(args.download_slots_per_node, 1),
        **roots,
    )
    api = load_api_client(args.kubeconfig)
    scopes = cache_scopes(args.namespace, settings.operator_namespace)
    stream_seconds = stream_seconds_for(args.watch_deadline)
    gate = Gate()
    # Its own connection pool: every scope's watch holds one connection for minutes at a time.
    # A change must be acted on within the resync period even when the watches are silent.
    cache = Cache(
        clone_api_client(api, pool=len(scopes) + 4),
        scopes,
        gate=gate,
        stream_seconds=stream_seconds,
        silence_limit=SILENCE_SHARE * args.resync_seconds,
    )
    kube = Kube(api, cache=cache, gate=gate)
    op = Operator(kube, settings, resync_seconds=args.resync_seconds, workers=args.workers, namespaces=args.namespace)
    cache.listener = op.on_cache_event
    registry = build_registry(op)
    peering = PeeringState(op, 0 if not args.peering else (len(args.namespace) or 1))
    kopf_filter = KopfLogFilter(on_pause=peering.pause, on_resume=peering.resume)
    kopf_filter.install()
    health = Health(cache, op.running_passes, args.watch_deadline, args.reconcile_deadline)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        if args.kubeconfig:
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.chunk_size = 500  # paginated initial lists
        configure_kopf(settings, stream_seconds, args.peering_lifetime)
        settings.posting.level = logging.WARNING
        settings.peering.name = args.peering or "ome-operator"
        settings.peering.standalone = not args.peering
        settings.peering.priority = args.peering_priority
        settings.peering.clusterwide = not args.namespace

    ready = threading.Event()
    server = serve_health(args.health_listen, ready, health.problems)
    stop = threading.Event()
    # `kill -USR1` prints every thread's stack to the log: what a wedged process is waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    cache.start()
    op.queue.start()
    threading.Thread(target=op.resync, args=(stop,), name="resync", daemon=True).start()
    log.info("ome-operator starting: namespaces=%s peering=%s", args.namespace or "all", args.peering or "standalone")
    check_download_namespace(kube, settings.operator_namespace)
    ready_flag = threading.Event()
    identity = own_identity()

    def mark_ready() -> None:
        ready_flag.wait()
        kube.wait_synced()
        ready.set()

    def run_kopf(failure: list[BaseException]) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    clusterwide=not args.namespace,
                    namespaces=args.namespace,
                    standalone=not args.peering,
                    peering_name=args.peering,
                    priority=args.peering_priority,
                    identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
                    ready_flag=ready_flag,
                    stop_flag=stop,
                )
            )
        except BaseException as exc:  # reported by the supervising loop
            failure.append(exc)

    threading.Thread(target=mark_ready, name="readiness", daemon=True).start()
    delay = 1.0
    try:
        # kopf runs in a thread so that signals reach this loop: kopf ending for any other reason
        # (a request that escalated after its retries, a task that failed) is restarted here
        # instead of ending the process, and the cache and the queue keep running meanwhile.
        while not stop.is_set():
            peering.start()
            failure: list[BaseException] = []
            thread = threading.Thread(target=run_kopf, args=(failure,), name="kopf", daemon=True)
            started = time.monotonic()
            thread.start()
            while thread.is_alive():
                thread.join(0.5)
                if health.kopf_down_since is not None and time.monotonic() - started > 60:
                    health.kopf_down_since = None  # up for a minute: not a crash loop
            if stop.is_set():
                break
            if health.kopf_down_since is None:
                health.kopf_down_since = time.monotonic()
            if args.peering:
                op.deactivate()  # our keep-alives stopped: a peer may take over
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            log.error(
                "kopf stopped (%s); restarting it in %.0f s",
                f"{type(failure[0]).__name__}: {failure[0]}" if failure else "returned",
                delay,
            )
            stop.wait(delay)
    finally:
        health.stopped.set()
        op.queue.stop()
        cache.stop()
        server.shutdown()
    return 0
