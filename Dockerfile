# syntax=docker/dockerfile:1.7
# Two images from one codebase (see docs/service.md):
#   docker build --target api    -t r2tuning-api .      # the HTTP API: slim, no torch
#   docker build --target worker -t r2tuning-worker .   # the GPU worker: CUDA base, torch, decoders
# docker compose builds both (docker-compose.yml).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Any CUDA base whose driver requirement the host meets; the torch wheels bring their own CUDA libraries.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-base-ubuntu22.04
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130

# ------------------------------------------------------------------------------------------------------------ api
FROM ${PYTHON_IMAGE} AS api
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY service/api/requirements.txt /tmp/requirements-api.txt
RUN pip install -r /tmp/requirements-api.txt
# The API process needs neither the engine (models/) nor torch: it learns the models from the workers.
COPY service/ ./service/
COPY r2tuning/ ./r2tuning/
RUN useradd --create-home --uid 10001 r2 && mkdir -p /data/uploads && chown r2 /data/uploads
USER r2
ENV PYTHONPATH=/app R2_HOST=0.0.0.0 R2_PORT=8000 R2_UPLOAD_DIR=/data/uploads
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "r2tuning", "healthcheck", "api"]
CMD ["python", "-m", "r2tuning", "serve"]

# ------------------------------------------------------------------------------------------------------------ worker
FROM ${CUDA_IMAGE} AS worker
ARG TORCH_INDEX_URL
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
# torch/torchvision with CUDA first (same versions as requirements.txt), then everything else.
RUN pip install "torch==2.14.1" "torchvision==0.29.1" --index-url "${TORCH_INDEX_URL}" \
    && pip install -r /tmp/requirements.txt
WORKDIR /app
COPY models/ ./models/
COPY service/ ./service/
COPY r2tuning/ ./r2tuning/
RUN useradd --create-home --uid 10001 r2 \
    && mkdir -p /checkpoints /data/scratch && chown r2 /checkpoints /data/scratch
USER r2
# Weights are fetched into /checkpoints (a volume) on first start; R2_DEVICE=auto picks the GPU.
ENV PYTHONPATH=/app R2_CHECKPOINT_DIR=/checkpoints HF_HOME=/checkpoints/hf R2_UPLOAD_DIR=/data/scratch \
    R2_DEVICE=auto
# The first start may download weights: give it time before the health check counts.
HEALTHCHECK --interval=15s --timeout=10s --start-period=15m --retries=3 \
    CMD ["python", "-m", "r2tuning", "healthcheck", "worker"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "r2tuning", "worker"]
