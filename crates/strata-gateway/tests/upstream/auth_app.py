"""A WSGI auth service for the forward_auth tests (tests/forward_auth.rs), in the style of the
services Traefik's ForwardAuth and nginx's auth_request ask.

By the request's `Authorization`:
- `Bearer good-token`: 200, `X-Auth-User: alice`, `X-Auth-Groups: admin`, and `X-Auth-Seen`: the
  forwarded method, URI, host and client it was told about, separated by spaces.
- `Bearer slow-token`: the same, after 3 seconds.
- none: 302 to `/login?rd=` + the forwarded URI (a browser that must log in first).
- anything else: 401 with `WWW-Authenticate: Bearer realm="strata"` and a short HTML page.

When `AUTH_CALLS` names a file, each call appends a line to it, so tests can count calls across
gunicorn's workers.

Usage: gunicorn -b 127.0.0.1:PORT --chdir tests/upstream auth_app:app
"""

import os
import time
from urllib.parse import quote

CALLS = os.environ.get("AUTH_CALLS")


def app(environ, start_response):
    if CALLS:
        with open(CALLS, "a") as calls:
            calls.write(environ.get("HTTP_X_FORWARDED_URI", "-") + "\n")
    auth = environ.get("HTTP_AUTHORIZATION")
    uri = environ.get("HTTP_X_FORWARDED_URI", "/")
    if auth in ("Bearer good-token", "Bearer slow-token"):
        if auth == "Bearer slow-token":
            time.sleep(3)
        seen = " ".join(
            environ.get(name, "-")
            for name in ("HTTP_X_FORWARDED_METHOD", "HTTP_X_FORWARDED_URI", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_FOR")
        )
        headers = [("X-Auth-User", "alice"), ("X-Auth-Groups", "admin"), ("X-Auth-Seen", seen), ("Content-Length", "0")]
        start_response("200 OK", headers)
        return [b""]
    if auth is None:
        body = b"log in first\n"
        headers = [("Location", "/login?rd=" + quote(uri, safe="")), ("Content-Length", str(len(body)))]
        start_response("302 Found", headers)
        return [body]
    body = b"<h1>who are you?</h1>\n"
    headers = [
        ("WWW-Authenticate", 'Bearer realm="strata"'),
        ("Content-Type", "text/html"),
        ("Content-Length", str(len(body))),
    ]
    start_response("401 Unauthorized", headers)
    return [body]
