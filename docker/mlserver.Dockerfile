# syntax=docker/dockerfile:1
#
# MLServer (Open Inference Protocol / KServe V2) with the scikit-learn runtime.
# Built from requirements/mlserver.txt rather than taken from seldonio/mlserver so
# that scikit-learn is the exact version rtml trains and saves models with: a
# joblib/pickle model is only reliably loadable by the version that wrote it.
# Build context is the repository root (see docker-compose.yml).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

COPY requirements/mlserver.txt /tmp/requirements-mlserver.txt
RUN pip install --no-cache-dir -r /tmp/requirements-mlserver.txt \
    && rm /tmp/requirements-mlserver.txt

# Non-root at run time; the model repository is mounted read-only at /mnt/models.
RUN useradd --create-home --uid 1000 mlserver
USER mlserver
WORKDIR /home/mlserver

ENV MLSERVER_HTTP_PORT=8080 \
    MLSERVER_GRPC_PORT=8001 \
    MLSERVER_METRICS_PORT=8002
EXPOSE 8080 8001 8002

CMD ["mlserver", "start", "/mnt/models"]
