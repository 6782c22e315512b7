# One image for every workload of the platform: the Ray Serve feed (head and workers of the
# RayService), the training RayCluster, pipeline steps, the drift and experiment CronJobs and
# the MLflow tracking server. Build: docker build -t ghcr.io/newsfeed-platform/newsfeed:0.1.0 .
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 NEWSFEED_HOME=/var/lib/newsfeed HOME=/tmp
WORKDIR /opt/newsfeed

# The pinned tree first (a layer that changes only with the lock); torch is the CPU build.
COPY requirements.lock ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && grep -v '^torch==' requirements.lock > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY pyproject.toml README.md ./
COPY newsfeed ./newsfeed
COPY pipelines ./pipelines
COPY serving ./serving
COPY monitoring ./monitoring
COPY feature_repo ./feature_repo
RUN pip install --no-deps . \
 && useradd --uid 10001 --no-create-home --home-dir /tmp newsfeed \
 && mkdir -p /var/lib/newsfeed && chown 10001 /var/lib/newsfeed

ENV NEWSFEED_FEATURE_REPO=/opt/newsfeed/feature_repo
USER 10001
ENTRYPOINT ["newsfeed"]
CMD ["--help"]
