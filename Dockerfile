# One image, two entrypoints: the operator (default: `python -m modelgate`)
# and the reference trainer (`command: [python, -m, modelgate.trainer]` in a
# release's training spec). Build: `make images`.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelgate" \
      org.opencontainers.image.description="Modelgate operator and reference trainer" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONSAFEPATH=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# git and ssh for GitOps delivery (promotions are commits); nothing to build with.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /install /usr/local
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin modelgate
USER 65532:65532
WORKDIR /tmp
CMD ["python", "-m", "modelgate"]
