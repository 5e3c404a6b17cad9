"""ome-operator: model-driven LLM serving on Kubernetes, compatible with OME (ome.io/v1beta1)."""
