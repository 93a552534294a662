# One image: by default the operator (`python -m modelgate`); training Jobs run
# the reference trainer with `command: [python, -m, modelgate.trainer]`.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim-bookworm
ENV PYTHONSAFEPATH=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
# git and ssh for GitOps delivery (promotions are commits).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin modelgate
USER 65532:65532
CMD ["python", "-m", "modelgate"]
