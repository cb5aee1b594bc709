"""WSGI entry point: `FACADE_CONFIG=FILE gunicorn wsgi:app`."""

from app import create_app

app = create_app()
