# One image for every Switchboard service; the command picks the service:
#   python -m services.gateway | services.rooms | services.streams | services.handlers
# Runs as a non-root user on a read-only root filesystem: nothing is written into the image at
# run time (bytecode is compiled at build time, HOME and TMPDIR point at /tmp, which the Helm
# chart mounts as an emptyDir).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY clients/python ./clients/python
# The demo page's JS client (GATEWAY_DEMO), packaged next to the page
COPY clients/js/src ./services/gateway/demo/client
# The project and its Python client (the CLI's) as wheels, then a virtualenv holding them and
# their pinned dependencies.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . ./clients/python \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install /wheels/*.whl \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin switchboard
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
# gateway 5001, rooms 5002, handlers 5003, streams 7890 (each also serves /healthz /readyz /metrics)
EXPOSE 5001 5002 5003 7890
CMD ["python", "-m", "services.gateway"]
