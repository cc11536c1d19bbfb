"""An upstream for the proxy's RFC 9110 tests (tests/proxy_rfc.rs), on the standard library only.

- `/via`: answers with the `Via` it received in `X-Seen-Via`, and a `Via` of its own.
- `/doc`: 4096 bytes of text with the strong `ETag: "v1"`; a `304` when `If-None-Match` lists
  `"v1"` — compared as plain strings, as many apps do, so `W/"v1"` alone never matches.
- `/truncated`: announces 1000000 bytes, sends 1000, waits, closes the connection.

Usage: python3 rfc_upstream.py PORT
"""

import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DOC = (b"strata onion layer request response body frame event " * 80)[:4096]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(head=True)

    def do_GET(self):
        self.answer(head=False)

    def answer(self, head):
        if self.path == "/via":
            body = b"ok"
            self.send_response(200)
            self.send_header("X-Seen-Via", self.headers.get("Via", ""))
            self.send_header("Via", "1.1 app-cache")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
        elif self.path == "/doc":
            tags = [t.strip() for t in self.headers.get("If-None-Match", "").split(",")]
            if '"v1"' in tags:
                self.send_response(304)
                self.send_header("ETag", '"v1"')
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(DOC)))
            self.send_header("ETag", '"v1"')
            self.end_headers()
            if not head:
                self.wfile.write(DOC)
        elif self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            # The gateway passes the head and the first bytes on before the connection ends (read
            # together with the end, hyper would drop them with the connection).
            time.sleep(0.3)
            # Mid-body: the connection ends 999000 bytes early.
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
