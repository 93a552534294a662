# One image for every Modelgate pod: the operator (default: `python -m
# modelgate`), the programs its Jobs run (trainer, importer, evaluator,
# verifier, layout, scorer) and the reference model server. Build: `make
# images` (buildah on a Debian base made from packages, see
# scripts/build-images.sh) or `docker build .` on the public Python image.
# Either way the project lives in a virtualenv: Debian's Python refuses
# `pip install` into the system interpreter (PEP 668).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The build machine's pip settings (scripts/build-images.sh passes them;
# docker build leaves them unset), for this stage only: never in the image.
ARG PIP_CERT
ARG PIP_INDEX_URL
RUN python3 -m venv /opt/modelgate
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN /opt/modelgate/bin/pip install --no-cache-dir /src

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelgate" \
      org.opencontainers.image.description="Modelgate operator, its Jobs' programs and the reference model server" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/modelgate/bin:$PATH VIRTUAL_ENV=/opt/modelgate \
    PYTHONSAFEPATH=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# git and ssh for GitOps delivery (promotions are commits); nothing to build with.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/modelgate /opt/modelgate
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin modelgate
USER 65532:65532
WORKDIR /tmp
CMD ["python", "-m", "modelgate"]
