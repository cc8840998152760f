# A hospital's SuperNode with deid_client installed, for NVIDIA GPUs.
# Build from the repository root:
#   docker build -f docker/supernode-gpu.Dockerfile -t deid-client/supernode-gpu .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml README.md ./
COPY deid_client deid_client
COPY server server
# A wheel install: the firewall config and the phantom model are package data, and the
# Flower app (FAB) the SuperNode receives carries code only, never weights.
RUN pip install . && rm -rf /app/deid_client /app/server

# Patient photos (/data/images/, optional /data/masks/), model weights (/models: a
# diffusers folder, e.g. /models/sd35-medium) and the node cache are mounted volumes.
# None of them is part of the image.
VOLUME ["/data", "/models", "/cache"]
RUN useradd --create-home app
USER app
ENTRYPOINT ["flower-supernode"]
CMD ["--superlink", "superlink:9091", "--root-certificates", "/certs/ca.crt", \
     "--auth-supernode-private-key", "/keys/supernode.key", \
     "--auth-supernode-public-key", "/keys/supernode.pub", \
     "--node-config", "data-dir='/data' cache-dir='/cache' model='/models/sd35-medium' device='cuda'"]
# The operator runs the federation with the matching preset:
#   flwr run . <federation> --run-config "firewall='preset=sd35_medium'"
# The same firewall by hand inside the image:
#   docker run --gpus all -v /data:/data -v /models:/models --entrypoint deid-client IMAGE \
#     firewall /data -o /cache/firewall --model /models/sd35-medium --device cuda preset=sd35_medium
