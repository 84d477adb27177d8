"""A fake Bluesky PDS on 127.0.0.1, following the wire format in network-notes.md §4.

Sessions are HS256 JWTs it signs and checks (scope, signature, `exp`): access
tokens live `access_ttl` seconds, then calls get 400 ExpiredToken; a refresh
token works once. Records: `createRecord` under an existing rkey fails inside the
repo as a generic 500, as the real PDS does; `putRecord` with `swapRecord: null`
gives 400 InvalidSwap when the record exists, and an identical record is a no-op.
Record text is checked (300 graphemes, 3,000 bytes), rkeys must be TIDs, facets
must index inside the text. RateLimit-* headers carry a unix-seconds reset.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import time
from typing import Any

from fakenet import FakeServer, Reply, Request

from adapters.text import graphemes

TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
_KEY = b"fake-pds-signing-key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cid(value: Any) -> str:
    """A stand-in CID: a digest of the canonical JSON."""
    return "bafyrei" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:52]


class FakeBluesky(FakeServer):
    """See the module docstring. `accounts` maps handle -> app password."""

    name = "fakebluesky"

    def __init__(self, accounts: dict[str, str], *, access_ttl: float = 7200, seed: int = 0) -> None:
        super().__init__(seed)
        self.accounts = dict(accounts)
        self.access_ttl = access_ttl
        self.records: dict[tuple[str, str], dict[str, Any]] = {}  # (did, rkey) -> record
        self.blobs: dict[str, bytes] = {}
        self.logins = 0
        self.refreshes = 0
        self._spent: set[str] = set()  # refresh tokens already used
        self._serial = itertools.count(1)

    def did(self, handle: str) -> str:
        return "did:plc:" + hashlib.sha256(handle.encode()).hexdigest()[:24]

    def faulty(self, request: Request) -> bool:
        return request.path.endswith(("repo.createRecord", "repo.putRecord"))

    def texts(self) -> list[str]:
        with self.lock:
            return [r["text"] for r in self.records.values()]

    def expire_all(self) -> None:
        """Make every access token issued so far expired."""
        with self.lock:
            self._expired_before = time.time()

    _expired_before = 0.0

    # -- sessions --------------------------------------------------------------------

    def _jwt(self, did: str, scope: str, ttl: float) -> str:
        now = time.time()
        head = _b64(json.dumps({"typ": "at+jwt" if scope.endswith("access") else "refresh+jwt",
                                "alg": "HS256"}).encode())
        body = _b64(json.dumps({"scope": scope, "sub": did, "iat": now, "exp": now + ttl,
                                "jti": next(self._serial)}).encode())
        sig = _b64(hmac.new(_KEY, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{sig}"

    def _claims(self, request: Request, scope: str) -> dict[str, Any] | Reply:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not token:
            return Reply(401, {"error": "AuthMissing", "message": "Authentication Required"})
        try:
            head, body, sig = token.split(".")
            good = _b64(hmac.new(_KEY, f"{head}.{body}".encode(), hashlib.sha256).digest())
            claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return Reply(400, {"error": "InvalidToken", "message": "Malformed token"})
        if not hmac.compare_digest(sig, good) or claims.get("scope") != scope:
            return Reply(400, {"error": "InvalidToken", "message": "Bad token scope"})
        expired = scope.endswith("access") and claims["iat"] <= self._expired_before
        if claims["exp"] < time.time() or expired:
            return Reply(400, {"error": "ExpiredToken", "message": "Token has expired"})
        return claims

    def _session(self, did: str, handle: str) -> Reply:
        return Reply(200, {"did": did, "handle": handle, "active": True,
                           "accessJwt": self._jwt(did, "com.atproto.access", self.access_ttl),
                           "refreshJwt": self._jwt(did, "com.atproto.refresh", 90 * 86400)})

    # -- routes ----------------------------------------------------------------------

    def route(self, request: Request) -> Reply:
        reply = self._route(request.path.removeprefix("/xrpc/"), request)
        reply.headers.update({"RateLimit-Limit": "5000", "RateLimit-Remaining": "4990",
                              "RateLimit-Reset": str(int(time.time()) + 3600),
                              "RateLimit-Policy": "5000;w=3600"})
        return reply

    def _route(self, nsid: str, request: Request) -> Reply:
        body = request.json() if request.method == "POST" else None
        if nsid == "com.atproto.server.createSession":
            handle, password = str(body.get("identifier")), body.get("password")
            with self.lock:
                self.logins += 1
            if self.accounts.get(handle) != password:
                return Reply(401, {"error": "AuthenticationRequired",
                                   "message": "Invalid identifier or password"})
            return self._session(self.did(handle), handle)
        if nsid == "com.atproto.server.refreshSession":
            claims = self._claims(request, "com.atproto.refresh")
            if isinstance(claims, Reply):
                return claims
            with self.lock:
                if claims["jti"] in self._spent:
                    return Reply(400, {"error": "ExpiredToken", "message": "Token has been revoked"})
                self._spent.add(claims["jti"])
                self.refreshes += 1
            handle = next(h for h in self.accounts if self.did(h) == claims["sub"])
            return self._session(claims["sub"], handle)
        if nsid == "com.atproto.repo.getRecord":  # public, like on the real PDS
            with self.lock:
                record = self.records.get((request.query.get("repo", ""), request.query.get("rkey", "")))
            if record is None:
                return Reply(400, {"error": "RecordNotFound", "message": "Could not locate record"})
            uri = f"at://{request.query['repo']}/app.bsky.feed.post/{request.query['rkey']}"
            return Reply(200, {"uri": uri, "cid": cid(record), "value": record})
        claims = self._claims(request, "com.atproto.access")
        if isinstance(claims, Reply):
            return claims
        if nsid == "com.atproto.identity.resolveHandle":
            handle = request.query.get("handle", "")
            if handle not in self.accounts:
                return Reply(400, {"error": "InvalidRequest", "message": "Unable to resolve handle"})
            return Reply(200, {"did": self.did(handle)})
        if nsid == "com.atproto.repo.uploadBlob":
            ref = cid(base64.b64encode(request.body).decode())
            with self.lock:
                self.blobs[ref] = request.body
            return Reply(200, {"blob": {"$type": "blob", "ref": {"$link": ref},
                                        "mimeType": request.headers.get("content-type"),
                                        "size": len(request.body)}})
        if nsid in ("com.atproto.repo.createRecord", "com.atproto.repo.putRecord"):
            return self._write(nsid.rsplit(".", 1)[1], claims["sub"], body)
        return Reply(501, {"error": "MethodNotImplemented", "message": "Method Not Implemented"})

    def _write(self, kind: str, did: str, body: dict[str, Any]) -> Reply:
        if body.get("repo") != did:
            return Reply(400, {"error": "InvalidRequest", "message": "Invalid repo"})
        record, rkey = body.get("record") or {}, body.get("rkey") or ""
        problem = _record_problem(record, rkey)
        if problem:
            return Reply(400, {"error": "InvalidRequest",
                               "message": f"Invalid app.bsky.feed.post record: {problem}"})
        with self.lock:
            old = self.records.get((did, rkey))
            if old is not None and kind == "createRecord":  # the MST refuses: a generic 500
                return Reply(500, {"error": "InternalServerError", "message": "Internal Server Error"})
            if old is not None and "swapRecord" in body and body["swapRecord"] is None:
                return Reply(400, {"error": "InvalidSwap", "message": "Record was at " + cid(old)})
            self.records[(did, rkey)] = record
            self.lock.notify_all()
        uri = f"at://{did}/app.bsky.feed.post/{rkey}"
        return Reply(200, {"uri": uri, "cid": cid(record), "validationStatus": "valid",
                           "commit": {"cid": cid([uri, record]), "rev": rkey}})


def _record_problem(record: dict[str, Any], rkey: str) -> str | None:
    text = record.get("text")
    if record.get("$type") != "app.bsky.feed.post" or not isinstance(text, str):
        return "must be an app.bsky.feed.post with text"
    if not TID.match(rkey):
        return f"record key {rkey!r} is not a valid TID"
    if graphemes(text) > 300 or len(text.encode()) > 3000:
        return "Record/text must not be longer than 300 graphemes"
    if not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", str(record.get("createdAt"))):
        return "Record/createdAt must be an valid atproto datetime"
    size = len(text.encode())
    for facet in record.get("facets", []):
        index = facet.get("index", {})
        if not 0 <= index.get("byteStart", -1) < index.get("byteEnd", -1) <= size:
            return "Record/facets has an index outside the text"
    return None
