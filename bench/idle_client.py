#!/usr/bin/env python3
"""Opens N keep-alive connections to a server, completes one request on each, and keeps them idle.

Usage: idle_client.py HOST PORT N PROTOCOL PATH   (PROTOCOL: h1, or h2c for HTTP/2 with prior knowledge)

Prints "open COUNT FAILED" once every connection has had its answer (or failed), then waits for a
line on stdin, closes every connection, prints "closed" and exits. While idle, each HTTP/2
connection keeps reading so that it answers the server's pings (a server that pings idle clients
would otherwise cut them). Opening is bounded: at most CONCURRENCY handshakes at a time, each with
a time limit, and the whole opening phase within OPEN_DEADLINE seconds.
"""

import asyncio
import sys

CONCURRENCY = 200
STEP_TIMEOUT = 10.0
OPEN_DEADLINE = 120.0


async def h1_request(reader, writer, host, path):
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n")[0].decode(errors="replace"))
    await reader.readexactly(length)


async def h2_request(reader, writer, host, path):
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [(":method", "GET"), (":scheme", "http"), (":authority", host), (":path", path)],
        end_stream=True,
    )
    writer.write(conn.data_to_send())
    await writer.drain()
    status = None
    while True:
        data = await reader.read(65536)
        if not data:
            raise RuntimeError("connection closed before the answer")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(":status")
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                writer.write(conn.data_to_send())
                if status != "200":
                    raise RuntimeError(f"status {status}")
                return conn
        writer.write(conn.data_to_send())


async def keep_answering(conn, reader, writer):
    """Feeds what an idle HTTP/2 connection receives (pings, settings) and sends the acknowledgements."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            conn.receive_data(data)
            writer.write(conn.data_to_send())
    except Exception:
        return


async def open_one(host, port, protocol, path, gate, opened, tasks):
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), STEP_TIMEOUT)
        except Exception:
            return False
        try:
            if protocol == "h1":
                await asyncio.wait_for(h1_request(reader, writer, host, path), STEP_TIMEOUT)
            else:
                conn = await asyncio.wait_for(h2_request(reader, writer, host, path), STEP_TIMEOUT)
                tasks.append(asyncio.create_task(keep_answering(conn, reader, writer)))
        except Exception as error:
            print(f"request failed: {error!r}", file=sys.stderr)
            writer.close()
            return False
        opened.append(writer)
        return True


async def main():
    host, port, n, protocol, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    if protocol not in ("h1", "h2c"):
        sys.exit(f"unknown protocol {protocol}")
    gate = asyncio.Semaphore(CONCURRENCY)
    opened, tasks = [], []
    jobs = [open_one(host, port, protocol, path, gate, opened, tasks) for _ in range(n)]
    try:
        results = await asyncio.wait_for(asyncio.gather(*jobs), OPEN_DEADLINE)
        failed = results.count(False)
    except asyncio.TimeoutError:
        failed = n - len(opened)
    print(f"open {len(opened)} {failed}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for task in tasks:
        task.cancel()
    for writer in opened:
        writer.close()
    for writer in opened:
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except Exception:
            pass
    print("closed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
