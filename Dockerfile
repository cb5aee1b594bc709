# The facade as a container: python slim, a non-root user, gunicorn serving wsgi:app.
# Mount a configuration and set FACADE_CONFIG, e.g.
#   docker run -p 8080:8080 -v $PWD/config:/config -e FACADE_CONFIG=/config/facade.yaml gm-imaging-facade
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/facade

RUN groupadd --system facade && useradd --system --gid facade --home /srv/facade facade

COPY requirements.txt .
RUN pip install --disable-pip-version-check -r requirements.txt

COPY app/ app/
COPY mappings/ mappings/
COPY wsgi.py .

USER facade
EXPOSE 8080
# Two workers: Prometheus multiprocess mode (README, Operations); app.ops.gunicorn_conf empties the
# folder at start, logs JSON, and leaves out gunicorn's access log (its lines carry query strings).
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/facade-metrics
CMD ["gunicorn", "-c", "python:app.ops.gunicorn_conf", "--bind", "0.0.0.0:8080", "--worker-class", "gthread", \
     "--workers", "2", "--threads", "8", "wsgi:app"]
