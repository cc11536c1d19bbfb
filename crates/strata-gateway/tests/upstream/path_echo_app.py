"""A WSGI app that answers with the request target it received, for the rewrite tests
(tests/redirect.rs): `RAW_URI` (the path and query exactly as sent), then `PATH_INFO` and
`QUERY_STRING` as gunicorn decoded them, one per line.

Usage: gunicorn -b 127.0.0.1:PORT --chdir tests/upstream path_echo_app:app
"""


def app(environ, start_response):
    lines = [environ.get("RAW_URI", ""), environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")]
    body = "\n".join(lines).encode("latin-1", "replace")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
