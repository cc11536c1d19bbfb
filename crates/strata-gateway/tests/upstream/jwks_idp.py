"""A tiny identity provider for the jwt tests (tests/jwt.rs): publishes a JWKS, rotates its RSA key
on demand, counts how often the JWKS is fetched, and mints tokens with PyJWT.

- `GET /jwks.json`: the current key set (counted): RSA key `rsa-1` (after `POST /rotate`: `rsa-2`
  only) and EC P-256 key `ec-1`.
- `GET /fetches`: how many times `/jwks.json` was fetched.
- `POST /rotate`: replaces `rsa-1` by `rsa-2` in the published set.
- `GET /token?kid=K&sub=S`: a token signed by key K (RS256 for `rsa-*`, ES256 for `ec-1`) with
  `sub`, `iss` `https://idp.test`, `aud` `api`, `email`, `exp` ten minutes away.

Usage: python3 jwks_idp.py PORT
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

KEYS = {
    "rsa-1": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "rsa-2": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "ec-1": ("ES256", ec.generate_private_key(ec.SECP256R1())),
}
state = {"published": ["rsa-1", "ec-1"], "fetches": 0}
lock = threading.Lock()


def jwk(kid):
    alg, private = KEYS[kid]
    algorithm = RSAAlgorithm if alg == "RS256" else ECAlgorithm
    key = json.loads(algorithm.to_jwk(private.public_key()))
    key.update({"kid": kid, "use": "sig", "alg": alg})
    return key


class Handler(BaseHTTPRequestHandler):
    def reply(self, body, content_type="application/json"):
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/jwks.json":
            with lock:
                state["fetches"] += 1
                published = list(state["published"])
            self.reply(json.dumps({"keys": [jwk(kid) for kid in published]}))
        elif url.path == "/fetches":
            with lock:
                self.reply(str(state["fetches"]), "text/plain")
        elif url.path == "/token":
            query = parse_qs(url.query)
            kid = query["kid"][0]
            alg, private = KEYS[kid]
            claims = {
                "sub": query.get("sub", ["alice"])[0],
                "email": "alice@example.com",
                "iss": "https://idp.test",
                "aud": "api",
                "exp": int(time.time()) + 600,
            }
            self.reply(jwt.encode(claims, private, algorithm=alg, headers={"kid": kid}), "text/plain")
        else:
            self.send_error(404)

    def do_POST(self):
        if self.path == "/rotate":
            with lock:
                state["published"] = ["rsa-2", "ec-1"]
            self.reply("rotated", "text/plain")
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
