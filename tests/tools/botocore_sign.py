#!/usr/bin/python3
"""botocore_sign.py - signs requests with botocore's SigV4 signer, for the
differential test tests/e2e/sigv4-diff.test.mjs.

Reads a JSON array of requests on stdin and prints a JSON array of results,
one process for the whole batch. Run with Debian's /usr/bin/python3 (package
python3-botocore). Each request:

  {"method", "path" (wire form), "query" (wire form, no '?'),
   "headers": [[name, value], ...] (repeats allowed, in order),
   "body" (str), "access_key_id", "secret_access_key", "session_token" (or
   null), "region", "service", "time" ("20150830T123600Z"),
   "s3": bool        -> S3SigV4Auth (path as-is, x-amz-content-sha256 signed)
   "sign_body": bool -> x-amz-content-sha256 set to the body's hash and signed
   "unsigned_payload": bool -> payload_signing_enabled False (https):
                        x-amz-content-sha256: UNSIGNED-PAYLOAD, signed
   "query_params": [[key, value], ...] or null -> when given, botocore
                        canonicalises these (decoded) pairs itself instead of
                        the URL's query (request.params)}

Result: {"signature", "authorization", "canonical_request"} or {"error"}.

The signing time is set in request.context and add_auth's steps are run one
by one (add_auth itself reads the clock); every canonicalisation step is
botocore's own.
"""
import hashlib
import json
import sys

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def sign(req):
    creds = Credentials(req["access_key_id"], req["secret_access_key"], req.get("session_token") or None)
    cls = S3SigV4Auth if req.get("s3") else SigV4Auth
    auth = cls(creds, req["service"], req["region"])
    url = "https://" + req.get("host", "example.amazonaws.com") + req["path"]
    if req.get("query"):
        url += "?" + req["query"]
    body = req.get("body", "").encode("utf-8")
    r = AWSRequest(method=req["method"], url=url, data=body)
    for name, value in req["headers"]:
        r.headers[name] = value  # HTTPHeaders appends: repeats are kept in order
    if req.get("query_params") is not None:
        r.params = [tuple(p) for p in req["query_params"]]
    if req.get("sign_body") and not req.get("s3") and not req.get("unsigned_payload"):
        r.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    if req.get("unsigned_payload"):
        r.context["payload_signing_enabled"] = False
    r.context["timestamp"] = req["time"]
    # add_auth, without its clock:
    auth._modify_request_before_signing(r)
    canonical = auth.canonical_request(r)
    sts = auth.string_to_sign(r, canonical)
    signature = auth.signature(sts, r)
    auth._inject_signature_to_request(r, signature)
    return {
        "signature": signature,
        "authorization": r.headers["Authorization"],
        "canonical_request": canonical,
    }


def main():
    out = []
    for req in json.load(sys.stdin):
        try:
            out.append(sign(req))
        except Exception as e:  # reported per request, never dropped
            out.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
