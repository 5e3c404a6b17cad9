"""Documented maximums of the API: the CRD bounds (admission) and the resolver (objects admitted
before a bound existed) both read them from here."""

# Groups (multi-node) or pods (single-node) one component may ask for.
MAX_REPLICAS = 1000
# Worker pods in one multi-node group besides its leader (a group spans at most 65 nodes).
MAX_WORKER_SIZE = 64
# Checked by the resolver only (render/checks.py), before anything is rendered: an object stored
# before validation existed must not make the operator build megabytes of manifests per pod.
MAX_ENV = 1000  # env entries of one container
MAX_COMMAND_BYTES = 256 * 1024  # command + args of one container, in UTF-8 bytes
