"""The integration tests' session control plane is the `cluster` fixture of tests/conftest.py: one
fixture for the whole session, shared with the downloader tests that need an API server (two
definitions of it would start two clusters of the same name).
"""
