"""Documented maximums of the API: the CRD bounds (admission) and the resolver (objects admitted
before a bound existed) both read them from here."""

# Groups (multi-node) or pods (single-node) one component may ask for.
MAX_REPLICAS = 1000
# Worker pods in one multi-node group besides its leader (a group spans at most 65 nodes).
MAX_WORKER_SIZE = 64
