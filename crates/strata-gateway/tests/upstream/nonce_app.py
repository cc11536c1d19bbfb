"""A WSGI app for the security_headers tests (tests/security_headers.rs): it answers with the CSP
nonce strata sent it, as a page would put it on its scripts.

- `/own`: also sets its own `X-Frame-Options: SAMEORIGIN` and `Content-Security-Policy: default-src *`.
- anything else: `text/html`, `<script nonce="NONCE">` with the `X-CSP-Nonce` request header's value.

Usage: gunicorn -b 127.0.0.1:PORT --chdir tests/upstream nonce_app:app
"""


def app(environ, start_response):
    nonce = environ.get("HTTP_X_CSP_NONCE", "")
    body = ('<script nonce="%s">run()</script>' % nonce).encode()
    headers = [("Content-Type", "text/html"), ("Content-Length", str(len(body)))]
    if environ["PATH_INFO"] == "/own":
        headers += [("X-Frame-Options", "SAMEORIGIN"), ("Content-Security-Policy", "default-src *")]
    start_response("200 OK", headers)
    return [body]
