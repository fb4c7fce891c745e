# One image for every project service of docker-compose.yml: the code location
# (gRPC server, the default CMD), the Dagster webserver, the Dagster daemon and
# the one-shot `migrate` job. Only the command differs between them.
#
# Builds with the classic builder as well as BuildKit (no cache mounts), so that
# Debian's docker-compose 1.29 can build it as is.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    PATH=/app/.venv/bin:$PATH

# uv comes from PyPI like any other package; pinned to the series that wrote uv.lock
# (lock revision 5), so `--frozen` reads it exactly as the developers do.
RUN pip install "uv>=0.13,<0.14"

WORKDIR /app

# Dependencies first, from the lock file only: this layer is rebuilt only when
# pyproject.toml or uv.lock change, not on every source edit.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself (see .dockerignore for what stays out).
COPY . .
RUN uv sync --frozen --no-dev

# Non-root user; DAGSTER_HOME holds the instance config and the local compute
# log / artifact storage (a named volume shared by webserver, daemon and code
# location in docker-compose.yml).
RUN groupadd --system --gid 1000 dagster \
    && useradd --system --uid 1000 --gid dagster --home-dir /home/dagster --create-home dagster \
    && mkdir -p "$DAGSTER_HOME/storage" \
    && cp docker/dagster.yaml docker/workspace.yaml "$DAGSTER_HOME/" \
    && chmod 0755 docker/*.sh \
    && chown -R dagster:dagster "$DAGSTER_HOME"

USER dagster

EXPOSE 4000

# The code location as a gRPC server; docker-compose.yml overrides the command
# for the webserver, the daemon and the migrate job.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "analytics_pipelines.definitions", "--location-name", "analytics_pipelines"]
