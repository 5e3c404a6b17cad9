# syntax=docker/dockerfile:1
# The OME operator image. The same image runs the model download Jobs: the operator passes its own
# image to them (--image) and they run `ome-operator download ...` as UID 65532.
#
#   docker build -t ome-operator:0.1.0 .
#
# Stage 1 builds the wheel from the sources alone; stage 2 installs it, with its dependencies, on a
# clean base, so no compiler, source tree or build tool ends up in the image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# Only what the wheel is made of (see .dockerignore): editing tests or docs keeps this layer cached.
COPY pyproject.toml README.md ./
COPY ome_operator ./ome_operator
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# No .pyc writes (the root filesystem is read-only at run time) and unbuffered logs. HOME points at
# /tmp, the one writable (emptyDir) path in the operator pod and the download Jobs, for libraries
# that keep a cache under $HOME.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
COPY --from=build /wheels/ /wheels/
RUN pip install /wheels/*.whl && rm -rf /wheels
# A numeric non-root user: the kubelet can check runAsNonRoot only against a numeric UID, and
# 65532 is the UID the download Jobs request (ome_operator/render/download.py) and the chart runs
# the operator as.
RUN groupadd --system --gid 65532 ome \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin ome
USER 65532:65532
ENTRYPOINT ["ome-operator"]
CMD ["run"]
