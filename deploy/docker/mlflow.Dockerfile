# The MLflow tracking server with its UI, for the local stack (deploy/compose/compose.yaml).
# The full `mlflow` package (Flask, the web app: ~850 MB) lives in this image only; the serving
# image has mlflow-skinny. Pinned in deploy/docker/mlflow.lock (`make lock`), at the version of
# the project's mlflow-skinny.
# Build from the repository root:
#   docker build -f deploy/docker/mlflow.Dockerfile -t sentiment-mlops-mlflow .

FROM python:3.11-slim AS build

# Offline builds set PIP_NO_INDEX=1 and PIP_FIND_LINKS=<wheels> (see tests/deploy/podman.py).
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/mlflow/bin:$PATH

RUN python3 -m venv /opt/mlflow
COPY deploy/docker/mlflow.lock /tmp/mlflow.lock
RUN pip install --no-cache-dir --require-virtualenv -r /tmp/mlflow.lock \
    && python3 -m pip uninstall --yes pip \
    && site=$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
    && find "$site" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} + \
    && mlflow --version


FROM python:3.11-slim

RUN groupadd --gid 10002 mlflow \
    && useradd --uid 10002 --gid 10002 --home-dir /mlartifacts --no-create-home \
        --shell /usr/sbin/nologin mlflow \
    && mkdir -p /mlartifacts \
    && chown 10002:10002 /mlartifacts

COPY --from=build /opt/mlflow /opt/mlflow
ENV PATH=/opt/mlflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MLFLOW_DISABLE_TELEMETRY=true

USER 10002:10002
WORKDIR /tmp
VOLUME ["/mlartifacts"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
# The store comes from MLFLOW_BACKEND_STORE_URI (e.g. postgresql+psycopg2://...); runs'
# artifacts are served by this server (mlflow-artifacts:/) from /mlartifacts.
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000", "--serve-artifacts", "--artifacts-destination", "/mlartifacts"]
