# syntax=docker/dockerfile:1
# One image for every Weft process: the Deployment's args pick it (python -m services.<name>, weft migrate).
# Multi-stage: wheels are built with a compiler in `build`; `runtime` gets only the installed venv, runs as
# an unprivileged user (uid 10001, matching deploy/k8s runAsUser) and writes only to /tmp.

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/weft
WORKDIR /src
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
COPY deploy ./deploy
COPY cli ./cli
COPY weft_client ./weft_client
RUN /opt/weft/bin/pip install . \
    && /opt/weft/bin/python -c "import services.gateway.app, services.executor.app, cli.main"

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/weft/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WEFT_HOST=0.0.0.0 \
    WEFT_PORT=8000
RUN groupadd --system --gid 10001 weft \
    && useradd --system --uid 10001 --gid weft --home-dir /home/weft --create-home --shell /usr/sbin/nologin weft
COPY --from=build /opt/weft /opt/weft
WORKDIR /home/weft
USER 10001:10001
EXPOSE 8000
# tini-free: each process handles SIGTERM itself (uvicorn's graceful shutdown, docs/decisions/0020).
ENTRYPOINT []
CMD ["python", "-m", "services.gateway"]
