# alexnet-cli on NVIDIA GPUs.
#
# The torch and nvidia-dali-cuda130 wheels carry their own CUDA 13 user-space
# libraries, so the base image only needs to match the driver side: CUDA 13.0's
# base image (no toolkit) on Ubuntu 24.04, whose Python 3.12 both wheels support.
# Host driver: R580 or newer (CUDA 13).
#
#   docker build -t alexnet-cli .
#   docker run --gpus all --ipc=host -v /data/imagenet:/data -v $PWD/runs:/runs \
#       alexnet-cli train --recipe two-gpu --data /data --out /runs/two-gpu
#
# --ipc=host (or a large --shm-size): DALI and DDP exchange tensors through shared memory.
FROM nvidia/cuda:13.0.0-base-ubuntu24.04

# video: nvJPEG (DALI's "mixed" decoder) reaches the A100/H100 hardware JPEG decoder only with this
# capability; with the base image's compute,utility it reports "Hardware Decoder not supported" and
# falls back to CUDA kernels (NVIDIA/CUDALibrarySamples#132).
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,video \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/alexnet-cli
COPY pyproject.toml README.md ./
COPY alexnet_cli ./alexnet_cli
COPY recipes ./recipes
# Pinned to the versions this release was tested with.
RUN pip install "torch==2.14.1" "torchvision==0.29.1" "lightning==2.6.6" "nvidia-dali-cuda130==2.4.0" \
    && pip install .

# Ubuntu 24.04's images ship a user 'ubuntu' with uid 1000: free the uid for ours (host files in /runs
# are then owned by the first user of most hosts).
RUN if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
    && useradd --create-home --uid 1000 alexnet && mkdir -p /data /runs && chown alexnet /runs
USER alexnet
VOLUME ["/data", "/runs"]
WORKDIR /runs
ENTRYPOINT ["alexnet"]
CMD ["--help"]
