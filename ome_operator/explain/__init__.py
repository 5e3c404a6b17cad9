"""`ome-operator explain`: why an InferenceService or model is or is not Ready, read from the cluster.

compute.py, pods.py and advice.py are pure (the object, pods, Events and logs are passed in);
observe.py does the reads; command.py is the subcommand. Importing this package stays light (no
Kubernetes client), because the CLI builds every subcommand's parser on each start.
"""

from .command import add_arguments, run

__all__ = ["add_arguments", "run"]
