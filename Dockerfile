# syntax=docker/dockerfile:1
# Bayou's image: the `bayou` command (ingress, worker, passwd, ...), as `pip install` installs it.
#
#   docker build -t bayou:0.1.0 .
#   docker run --rm bayou:0.1.0 --help
#
# compose/docker-compose.yml builds it for its ingress nodes, workers and topics job.

# Builder: the wheel of this repository and the wheels of its dependencies.
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bayou/ bayou/
COPY ingress/ ingress/
COPY agents/ agents/
COPY dashboards/ dashboards/
COPY kafkaio/ kafkaio/
RUN pip wheel --wheel-dir /wheels .

# Runtime: only the installed wheels, run as an unprivileged user.
FROM python:3.11-slim AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 bayou \
 && useradd --system --uid 10001 --gid bayou --home-dir /var/lib/bayou --create-home \
      --shell /usr/sbin/nologin bayou \
 && mkdir -p /var/lib/bayou/state /etc/bayou \
 && chown -R bayou:bayou /var/lib/bayou
# The builder's wheels, mounted for this step only (not a layer of the image).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels bayou
USER bayou
WORKDIR /var/lib/bayou
# A worker's RocksDB state (a volume in compose/docker-compose.yml).
ENV BAYOU_STATE_DIR=/var/lib/bayou/state
# MQTT, ingress metrics, worker metrics.
EXPOSE 1883 9464 9465
ENTRYPOINT ["bayou"]
CMD ["--help"]
