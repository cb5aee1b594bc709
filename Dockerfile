# The facade as a container image (docs/operations.md). Two targets:
#
#   runtime (name it: a plain `docker build .` builds the last stage, the demo):
#     docker build --target runtime -t gm-imaging-facade .
#     docker run -p 8080:8080 -v facade-state:/var/lib/facade \
#       -v $PWD/facade.yaml:/etc/facade/facade.yaml:ro -e FACADE_CURSOR_SECRET=... --read-only \
#       --tmpfs /tmp gm-imaging-facade
#     Only app/, mappings/, wsgi.py and the runtime requirements; a non-root user; state (signing keys, the
#     SQLite files of an embedded set-up) under the volume /var/lib/facade; nothing else is written but /tmp
#     (a tmpfs with --read-only). Start-up refuses the demo's published keys and users and a missing cursor
#     secret unless the configuration says `demo: true` (app.settings.demo_problems).
#
#   demo:
#     docker build --target demo -t gm-imaging-facade:demo .
#     docker run -p 8080:8080 gm-imaging-facade:demo      # then open http://127.0.0.1:8080/apps/imaging-timeline/
#     The runtime image plus config/demo.yaml, its published demo keys, the demo generator (tools/demo) and
#     the Postman environment:
#     `python -m app demo` generates the demo archives and signing keys at first start, into the volume.
#
# gunicorn settings come from the environment: FACADE_BIND, FACADE_WORKERS, FACADE_THREADS, FACADE_TIMEOUT
# below, and GUNICORN_CMD_ARGS (gunicorn's own variable) for any other setting.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the runtime requirements in a virtual environment, copied whole into the runtime stage ------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/facade-venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/facade-venv/bin/pip install -r /tmp/requirements.txt

# -- runtime -----------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/facade-venv/bin:$PATH \
    FACADE_CONFIG=/etc/facade/facade.yaml \
    FACADE_STATE_DIR=/var/lib/facade \
    PROMETHEUS_MULTIPROC_DIR=/tmp/facade-metrics \
    FACADE_BIND=0.0.0.0:8080 \
    FACADE_WORKERS=2 \
    FACADE_THREADS=8 \
    FACADE_TIMEOUT=60
RUN groupadd --system --gid 10001 facade \
    && useradd --system --uid 10001 --gid facade --home-dir /var/lib/facade --no-create-home \
       --shell /usr/sbin/nologin facade \
    && install -d -o facade -g facade -m 0700 /var/lib/facade \
    && install -d -m 0755 /etc/facade
COPY --from=build /opt/facade-venv /opt/facade-venv
WORKDIR /srv/facade
COPY app/ app/
COPY mappings/ mappings/
COPY wsgi.py ./
USER 10001:10001
VOLUME ["/var/lib/facade"]
EXPOSE 8080
# /readyz: 200 when enough archives answer (ops.readiness.archives_required), else 503 (urlopen raises).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['FACADE_BIND'].rsplit(':', 1)[1] + '/readyz', timeout=4)"]
# app.ops.gunicorn_conf: JSON logs, no access log with query strings, Prometheus multiprocess folder
# emptied at start. --no-control-socket: gunicorn 27 would otherwise create $HOME/.gunicorn/gunicorn.ctl,
# i.e. in the state volume, which replicas may share. exec: gunicorn is PID 1 and gets the SIGTERM.
CMD ["sh", "-c", "exec gunicorn -c python:app.ops.gunicorn_conf --no-control-socket --worker-class gthread --bind \"$FACADE_BIND\" --workers \"$FACADE_WORKERS\" --threads \"$FACADE_THREADS\" --timeout \"$FACADE_TIMEOUT\" wsgi:app"]

# -- demo: `docker run -p 8080:8080 IMAGE` serves the demo ----------------------------------------------
FROM runtime AS demo
USER root
COPY config/demo.yaml config/demo.yaml
COPY config/demo-keys/ config/demo-keys/
COPY tools/__init__.py tools/__init__.py
COPY tools/demo/ tools/demo/
# The committed Postman environment: the demo writes one for the address it serves (into var/, the volume).
COPY postman/demo.postman_environment.json postman/demo.postman_environment.json
# config/demo.yaml names ../demo-data and ../var: both live in the volume, created by the CMD below (a
# build step's change under a declared VOLUME may be discarded, so nothing is put there at build time).
RUN ln -s /var/lib/facade/demo-data demo-data \
    && ln -s /var/lib/facade/var var
USER 10001:10001
# The address a browser on the Docker host uses (the sample app's registered redirect is on 127.0.0.1:8080).
ENV FACADE_BASE_URL=http://127.0.0.1:8080/fhir
# The first start generates the demo archives (about a minute on a small machine) before serving.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4)"]
CMD ["sh", "-c", "mkdir -p /var/lib/facade/demo-data /var/lib/facade/var && exec python -m app demo --host 0.0.0.0 --port 8080"]
