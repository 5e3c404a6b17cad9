"""The model-download Job's program: `ome-operator download` (see `main.py` for flags and exit codes).

It stands alone (no operator, render or kopf imports): the Job runs the operator's image with

    command: ["ome-operator", "download"]
    args:    [STORAGE_URI, "--dest=<storage.path>", "--progress-configmap=<ns>/<name>", ...]
    env:     HF_TOKEN (secretKeyRef), HF_ENDPOINT (optional), NODE_NAME (fieldRef spec.nodeName)

and reads its result from the container's termination message (JSON, at most 4 KiB):
`status`, `commit`, `files`, `bytes`, `bytesTransferred`, `bytesHashed`, `seconds` and `metadata`
(OME's names: modelType, modelArchitecture, modelFormat, modelFramework, modelParameterSize,
quantization, maxTokens, plus parameterCount and dtype); on failure `status: Failed`, `error`,
`permanent` and, when one file is to blame, `file`. While it runs, the Job merge-patches its own
key, `data[<node name>]`, of the model's progress ConfigMap with a JSON snapshot (OME's progress
shape plus etaSeconds, bytesTransferred, elapsedSeconds, commit, node, and message on failure),
ending with phase Succeeded or Failed.

Modules, in the order a download uses them: uri (what to fetch), listing (resolve the revision
once, list files and their hashes), manifest (what is already verified on disk), fetch (one file:
stream, hash, resume, retry), retry (backoff and Retry-After), pipeline (the whole model, in
parallel; or validation of local:// and pvc://), metadata (config.json and safetensors headers),
progress and kubeapi (the log bar and the ConfigMap), report (redaction, termination message).
"""
