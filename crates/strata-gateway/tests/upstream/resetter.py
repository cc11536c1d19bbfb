"""An upstream that reads each request whole, then resets the connection without answering
(SO_LINGER 0: a TCP RST), counting the requests by method. `GET /attempts` answers the counts
as JSON instead. For the retry tests (tests/pools.rs); standard library only.

Usage: python3 resetter.py PORT
"""

import json
import socket
import struct
import sys
import threading

counts = {}
lock = threading.Lock()


def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return method, path


def handle(conn):
    with conn:
        request = read_request(conn)
        if request is None:
            return
        method, path = request
        if path == "/attempts":
            with lock:
                body = json.dumps(counts).encode()
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            conn.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            return
        with lock:
            counts[method] = counts.get(method, 0) + 1
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(64)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
