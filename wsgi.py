"""WSGI entry point: `FACADE_CONFIG=FILE gunicorn wsgi:app`."""

from app import serving_app

app = serving_app()
