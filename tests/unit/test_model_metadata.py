"""The operator reads what the downloader reports: the termination-message contract, both sides."""

from __future__ import annotations

import json

from ome_operator.reconcile.model import compute_metadata, job_phase, read_termination_summary

SUMMARY = {
    "status": "Succeeded",
    "commit": "a" * 40,
    "files": 12,
    "bytes": 123456789,
    "seconds": 3.2,
    "metadata": {
        "modelType": "kimi_k2",
        "modelArchitecture": "DeepseekV3ForCausalLM",
        "modelFormat": {"name": "safetensors", "version": "1.0.0"},
        "modelFramework": {"name": "transformers", "version": "4.48.3"},
        "modelParameterSize": "1.03T",
        "parameterCount": 1026000000000,
        "dtype": "F8_E4M3",
        "quantization": "fp8",
        "maxTokens": 131072,
    },
}


def test_metadata_maps_the_downloader_summary() -> None:
    assert compute_metadata(SUMMARY) == {
        "commit": "a" * 40,
        "architecture": "DeepseekV3ForCausalLM",
        "modelType": "kimi_k2",
        "parameterCount": 1026000000000,
        "parameterSize": "1.03T",
        "dtype": "F8_E4M3",
        "quantization": "fp8",
        "maxTokens": 131072,
        "transformersVersion": "4.48.3",
        "sizeBytes": 123456789,
        "files": 12,
    }


def test_termination_message_is_read_from_the_jobs_pod() -> None:
    pods = [
        {"metadata": {"labels": {"job-name": "other"}}, "status": {}},
        {
            "metadata": {"labels": {"job-name": "m-dl-1"}},
            "status": {"containerStatuses": [{"state": {"terminated": {"message": json.dumps(SUMMARY)}}}]},
        },
    ]
    assert read_termination_summary(pods, "m-dl-1") == SUMMARY
    assert read_termination_summary(pods, "missing") is None


def test_job_phase_from_conditions() -> None:
    assert job_phase(None) == ("Pending", "")
    assert job_phase({"status": {"active": 1}}) == ("Running", "")
    assert job_phase({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == ("Succeeded", "")
    failed = {
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "x"}]
        }
    }
    assert job_phase(failed) == ("Failed", "BackoffLimitExceeded: x")
