# One image for every tierq service: the workers, Flower, the migration job, the metrics exporter and
# the simulated provider differ only in their command (see docker-compose.yml).
FROM python:3.12-slim

# One BLAS thread per process: a worker embeds small batches, and on a small machine several worker
# processes each spawning a thread per core would fight over it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1

WORKDIR /src
# Dependencies first, in their own layer, so that a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
    && mkdir -p /etc/tierq && cp tierq/configs/*.toml /etc/tierq/ \
    && useradd --system --create-home --uid 10001 tierq \
    && rm -rf /src

# The working directory holds no code: `celery -A workers` imports the installed packages.
WORKDIR /home/tierq
USER tierq
ENV TIERQ_CONFIG=/etc/tierq/example.toml
EXPOSE 5555 8765 9808
CMD ["tierq", "--help"]
