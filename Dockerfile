# syntax=docker/dockerfile:1
#
# One Dockerfile, two images (docker-compose.yml builds both; see docs/deploy.md):
#
#   docker build --target runtime   -t acesteps .            listener, publisher, registry-deploy
#   docker build --target generator -t acesteps-generator .  generator: adds the `gen` extra
#                                                            (torch with its CUDA wheels, diffusers)
#
# Only the generator image carries torch/diffusers, so the listener and publisher stay small.

FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# An unprivileged user; the directories that named volumes mount on are created here, owned by
# it, so that a fresh volume inherits the ownership.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/acesteps --create-home acesteps \
 && mkdir -p /var/lib/acesteps/deployment /var/lib/acesteps/status /var/cache/huggingface \
 && chown -R acesteps:acesteps /var/lib/acesteps /var/cache/huggingface

# The source is copied to /src and installed from there; the services run from the installed
# package (the ABI, the schemas and the web page are package data), not from /src.
WORKDIR /src

# The dependencies, read from pyproject.toml, get a layer of their own: changing the code does not
# download them again.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies']))" > /tmp/requirements-base.txt

# Settings are read from ACESTEPS_* variables. Compose passes `${VAR:-}` as an empty string when
# VAR is unset, and an empty value is not "unset" for the settings (an empty private key, an empty
# contract address), so the entrypoint drops every empty ACESTEPS_* variable before it starts the
# command: empty means "use the default".
ENTRYPOINT ["/bin/sh", "-c", "for v in $(env | sed -n 's/^\\(ACESTEPS_[A-Za-z0-9_]*\\)=$/\\1/p'); do unset \"$v\"; done; exec \"$@\"", "acesteps-entrypoint"]


# ---------------------------------------------------------------- listener, publisher
FROM base AS runtime

RUN pip install -r /tmp/requirements-base.txt
COPY . .
# `.[postgres]`: the API's status store may be a shared PostgreSQL (several API replicas).
RUN pip install ".[postgres]"
WORKDIR /var/lib/acesteps
# soundfile: the API decodes uploads with the libsndfile its wheel bundles (MP3 included).
RUN python -c "import listener.settings, publisher.settings, psycopg, acesteps.registry as r; r.abi(); \
import soundfile as sf; assert 'MP3' in sf.available_formats(), sf.available_formats()"

USER acesteps
CMD ["python", "-m", "listener"]


# ---------------------------------------------------------------- generator (GPU)
FROM base AS generator

RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['optional-dependencies']['gen']))" > /tmp/requirements-gen.txt \
 && pip install -r /tmp/requirements-base.txt -r /tmp/requirements-gen.txt
COPY . .
RUN pip install ".[gen]"
WORKDIR /var/lib/acesteps
RUN python -c "import generator.settings"

# Model weights (the Hugging Face cache, and checkpoints pulled by the generator or
# `acesteps models pull`) live on a volume; see docker-compose.yml.
ENV HF_HOME=/var/cache/huggingface
ENV ACESTEPS_MODELS_DIR=/var/cache/huggingface/acesteps-models
USER acesteps
CMD ["python", "-m", "generator"]
