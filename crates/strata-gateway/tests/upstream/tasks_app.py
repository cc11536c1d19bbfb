"""A small WSGI tasks app for the gateway's tests, served by gunicorn behind strata.

It knows nothing about authentication, CORS or request ids: strata does that in front of it.
Tasks live in SQLite (the file named by TASKS_DB) so that every gunicorn worker sees the same ones.

Routes:
  GET    /tasks              list
  POST   /tasks              create from {"title": ...}  -> 201
  GET    /tasks/<id>         one task, 404 when missing
  PUT    /tasks/<id>         update {"title"?, "done"?}
  DELETE /tasks/<id>         -> 204
  GET    /headers            the request headers the app received, as JSON
  GET    /big?mb=N           N MiB of bytes, streamed in 64 KiB chunks
  GET    /events?n=N&gap_ms=M  N server-sent events, M ms apart
  GET    /slow?ms=M          answers after M ms
  POST   /upload             reads the body, answers its length
"""

import json
import os
import sqlite3
import time
from urllib.parse import parse_qs

DB = os.environ.get("TASKS_DB", "/tmp/strata-tasks.db")


def connect():
    conn = sqlite3.connect(DB, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0)")
    return conn


def as_task(row):
    return {"id": row[0], "title": row[1], "done": bool(row[2])}


def respond(start_response, status, body=None, content_type="application/json"):
    payload = b"" if body is None else json.dumps(body).encode()
    headers = [("Content-Length", str(len(payload)))]
    if body is not None:
        headers.append(("Content-Type", content_type))
    start_response(status, headers)
    return [payload]


def read_json(environ):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
    try:
        value = json.loads(raw or b"null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def big(start_response, mib):
    chunk = b"x" * 65536
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(mib * 1048576))])
    return (chunk for _ in range(mib * 16))


def events(start_response, n, gap_ms):
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])

    def stream():
        for i in range(n):
            if i:
                time.sleep(gap_ms / 1000)
            yield f"id: {i}\ndata: event {i}\n\n".encode()

    return stream()


def app(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "/")
    if path == "/headers":
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        return respond(start_response, "200 OK", {"headers": headers, "path": path, "query": environ.get("QUERY_STRING", "")})
    if path == "/big":
        return big(start_response, int(query(environ).get("mb", "10")))
    if path == "/events":
        q = query(environ)
        return events(start_response, int(q.get("n", "3")), int(q.get("gap_ms", "300")))
    if path == "/slow":
        time.sleep(int(query(environ).get("ms", "1000")) / 1000)
        return respond(start_response, "200 OK", {"slept": True})
    if path == "/upload" and method == "POST":
        total = 0
        stream = environ["wsgi.input"]
        while True:
            data = stream.read(65536)
            if not data:
                break
            total += len(data)
        return respond(start_response, "200 OK", {"received": total})
    if path == "/tasks":
        conn = connect()
        with conn:
            if method == "GET":
                rows = conn.execute("SELECT id, title, done FROM tasks ORDER BY id").fetchall()
                return respond(start_response, "200 OK", [as_task(r) for r in rows])
            if method == "POST":
                body = read_json(environ)
                if not body or not isinstance(body.get("title"), str):
                    return respond(start_response, "400 Bad Request", {"error": "expected {\"title\": \"...\"}"})
                cur = conn.execute("INSERT INTO tasks (title) VALUES (?)", (body["title"],))
                return respond(start_response, "201 Created", {"id": cur.lastrowid, "title": body["title"], "done": False})
        return respond(start_response, "405 Method Not Allowed", {"error": "method not allowed"})
    if path.startswith("/tasks/"):
        try:
            task_id = int(path[len("/tasks/"):])
        except ValueError:
            return respond(start_response, "404 Not Found", {"error": "no such task"})
        conn = connect()
        with conn:
            row = conn.execute("SELECT id, title, done FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                return respond(start_response, "404 Not Found", {"error": "no such task"})
            if method == "GET":
                return respond(start_response, "200 OK", as_task(row))
            if method == "PUT":
                body = read_json(environ)
                if body is None:
                    return respond(start_response, "400 Bad Request", {"error": "expected a JSON object"})
                title = body.get("title", row[1])
                done = bool(body.get("done", row[2]))
                conn.execute("UPDATE tasks SET title = ?, done = ? WHERE id = ?", (title, int(done), task_id))
                return respond(start_response, "200 OK", {"id": task_id, "title": title, "done": done})
            if method == "DELETE":
                conn.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
                return respond(start_response, "204 No Content")
        return respond(start_response, "405 Method Not Allowed", {"error": "method not allowed"})
    return respond(start_response, "404 Not Found", {"error": "not found"})
