"""CRD generation: the API models in ome_operator.api -> structural CRD YAML (crds/, charts/ome-crd/).

`python -m ome_operator.schema` (make crds) writes the files; tests/test_schema.py fails on drift.
"""

from .crd import MAX_CRD_BYTES, custom_resource_definition, resources
from .files import drift, generated_files, write_files
from .openapi import SchemaError, openapi_schema
from .structural import structural_problems
from .validate import Conformance, check_object

__all__ = [
    "MAX_CRD_BYTES",
    "Conformance",
    "SchemaError",
    "check_object",
    "custom_resource_definition",
    "drift",
    "generated_files",
    "openapi_schema",
    "resources",
    "structural_problems",
    "write_files",
]
