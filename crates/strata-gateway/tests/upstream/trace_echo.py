"""An upstream for the tracing tests (tests/traces.rs), on the standard library only.

Every request is answered `200` with the W3C trace context headers it received as its body:
`traceparent=VALUE` and `tracestate=VALUE`, one per line (an empty value when absent).

Usage: python3 trace_echo.py PORT
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = "traceparent={}\ntracestate={}\n".format(
            self.headers.get("traceparent", ""), self.headers.get("tracestate", "")
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
