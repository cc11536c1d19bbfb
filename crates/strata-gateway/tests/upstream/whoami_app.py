"""A WSGI app that says which instance answered, for the balancing tests (tests/pools.rs).

- `GET /healthz`: `ok`.
- `POST` anything: `NAME:` then the request body it received.
- anything else: `NAME`, the `WHOAMI` environment variable this instance was started with.

Usage: WHOAMI=a gunicorn -b 127.0.0.1:PORT --chdir tests/upstream whoami_app:app
"""

import os

NAME = os.environ.get("WHOAMI", "unnamed").encode()


def app(environ, start_response):
    if environ["PATH_INFO"] == "/healthz":
        body = b"ok"
    elif environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = NAME + b":" + environ["wsgi.input"].read(length)
    else:
        body = NAME
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
