# syntax=docker/dockerfile:1
#
# One image for every role of assessment-refresh; the role is the command:
#   docker run IMAGE            -> the REST API (default CMD "api")
#   docker run IMAGE consumer   -> one consumer-group member
#   docker run IMAGE migrate | load FILE | keys create --company N
# Configuration comes from environment variables (see shared/settings.py).

# ---- builder: build the wheel and install it, with its dependencies, into a venv
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that a source change does not
# reinstall them. Every dependency ships manylinux wheels (librdkafka, libpq
# bundled), so no compiler or system library is needed.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt

# Then the packages themselves (only what the wheel is built from: no .git,
# tests or local virtualenvs enter the build). The glob README.m[d] copies
# README.md (pyproject's readme) when it exists and is skipped otherwise;
# pyproject.toml beside it keeps the legacy builder from failing on no match.
COPY pyproject.toml README.m[d] ./
COPY shared ./shared
COPY consumer ./consumer
COPY producer_api ./producer_api
COPY assessment_refresh ./assessment_refresh
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl

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
