#!/usr/bin/env python3
"""End-to-end checks of the example service over HTTP, with the real models.

Usage: run.py --binary target/debug/rag-service --python VENV_PYTHON

Starts the service on a loopback port of its own in a fresh directory, then checks
with real clients (curl, the `openai` package, `promtool`): probes during start-up,
tokens (401/403), limits (413, 429), bad input (each a 4xx with a JSON reason),
tenant isolation in answers, streams, cache hits, dead letters, metrics and
errors, the file watcher (create, edit, rename, delete within 2 s; an undecodable
file dead-lettered, fixed and re-driven), webhooks (signed, replay refused),
cancellation, and that nothing acknowledged is lost across SIGKILL. Prints one
line per check; exits non-zero on the first failure.
"""
import argparse, base64, hashlib, hmac, json, os, shutil, signal, socket, subprocess
import sys, tempfile, time, urllib.request, urllib.error, http.client

ISS, AUD = "https://idp.e2e.invalid", "rag-e2e"
SECRETS = {"acme": b"acme-e2e-secret-0123456789abcdef0123", "globex": b"globex-e2e-secret-0123456789abcdef012"}
STRANGER = b"stranger-secret-0123456789abcdef0123456"
WEBHOOK_SECRET = "acme-webhook-secret-0123456789abcdef"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(tenant, sub, roles, groups=("staff",), key=None, kid=None, **claims):
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": kid or tenant}
    body = {"iss": ISS, "aud": AUD, "sub": sub, "tenant": tenant, "groups": list(groups),
            "rag_roles": list(roles), "iat": now, "nbf": now - 5, "exp": now + 3600}
    body.update(claims)
    msg = b64(json.dumps(header).encode()) + "." + b64(json.dumps(body).encode())
    sig = hmac.new(key or SECRETS[tenant], msg.encode(), hashlib.sha256).digest()
    return msg + "." + b64(sig)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Service:
    def __init__(self, binary, root, port, env):
        self.binary, self.root, self.port, self.env = binary, root, port, env
        self.base = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.root, "service.log"), "ab")
        self.proc = subprocess.Popen([self.binary, "--config", os.path.join(self.root, "service.toml")],
                                     stdout=self.log, stderr=self.log, env=self.env)
        statuses = []
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"the service exited with {self.proc.returncode}; log: {self.root}/service.log")
            # curl: 000 while nothing listens yet.
            code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", self.base + "/readyz"],
                                  capture_output=True, timeout=30).stdout.decode()
            if code not in ("", "000"):
                statuses.append(int(code))
                if code == "200":
                    return statuses
            time.sleep(0.02)
        fail("the service did not become ready in 300 s")

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


def request(method, url, body=None, headers=None, raw=False, timeout=120):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    h = {"content-type": "application/json"} if data is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            payload = r.read()
            status, hdrs = r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        payload, status, hdrs = e.read(), e.code, dict(e.headers)
    if raw:
        return status, payload, hdrs
    try:
        return status, json.loads(payload) if payload else None, hdrs
    except ValueError:
        return status, payload.decode(errors="replace"), hdrs


def curl(method, url, data, headers):
    """status and JSON body through curl (which reads an early 413 while still sending)."""
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    args = ["curl", "-s", "-o", f.name + ".out", "-w", "%{http_code}", "-X", method, url,
            "--data-binary", "@" + f.name, "-H", "content-type: application/json"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    code = subprocess.run(args, capture_output=True, timeout=120).stdout.decode()
    try:
        body = json.load(open(f.name + ".out"))
    except (OSError, ValueError):
        body = None
    os.unlink(f.name)
    if os.path.exists(f.name + ".out"):
        os.unlink(f.name + ".out")
    return int(code or 0), body


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, what, detail=""):
    if not cond:
        fail(f"{what}: {detail}")
    print(f"ok: {what}", flush=True)


def is_json_error(body):
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("message")


def sse_events(base, path, tok, body, stop_after=None):
    """(event, data) pairs of a streamed response; closes after `stop_after` events."""
    host, port = base.replace("http://", "").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("POST", path, json.dumps(body), {"authorization": f"Bearer {tok}",
                 "content-type": "application/json", "accept": "text/event-stream"})
    r = conn.getresponse()
    if r.status != 200:
        return r.status, [json.loads(r.read() or b"null")]
    events, event, data = [], "message", []
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip("\r\n")
        if line.startswith(":"):
            continue
        if line == "":
            if data:
                events.append((event, "\n".join(data)))
                if stop_after and len(events) >= stop_after:
                    break
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    conn.close()
    return 200, events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--python", required=True, help="a Python with the openai package")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    root = tempfile.mkdtemp(prefix="rag-service-e2e-")
    watched = os.path.join(root, "watched")
    os.makedirs(watched)
    port = free_port()
    jwks = {"keys": [
        {"kty": "oct", "kid": t, "alg": "HS256", "k": b64(s), "x-rag-tenants": [t]} for t, s in SECRETS.items()]}
    with open(os.path.join(root, "keys.json"), "w") as f:
        json.dump(jwks, f)
    config = f'''listen = "127.0.0.1:{port}"
state_dir = "state"
[limits]
max_body_bytes = 1048576
[auth]
issuer = "{ISS}"
audience = "{AUD}"
jwks_file = "keys.json"
[queue]
capacity = 8
[[webhooks]]
tenant = "acme"
secret_env = "E2E_ACME_WEBHOOK"
[[watch]]
dir = "watched"
tenant = "acme"
groups = ["staff"]
debounce_ms = 100
'''
    with open(os.path.join(root, "service.toml"), "w") as f:
        f.write(config)
    env = dict(os.environ, E2E_ACME_WEBHOOK=WEBHOOK_SECRET, RUST_LOG="info")

    # A config file with an unknown key is refused at start-up, naming the key.
    bad = os.path.join(root, "bad.toml")
    with open(bad, "w") as f:
        f.write(config.replace("[queue]\ncapacity = 8", "[queue]\ncapacty = 8"))
    r = subprocess.run([binary, "--config", bad], capture_output=True, env=env, timeout=60)
    check(r.returncode != 0 and b"capacty" in r.stderr, "a config file with an unknown key is refused",
          r.stderr.decode()[-300:])

    svc = Service(binary, root, port, env)
    statuses = svc.start()
    check(statuses[0] == 503 and statuses[-1] == 200, "/readyz answers 503 during start-up, then 200",
          str(statuses[:3]))
    st, body, _ = request("GET", svc.base + "/livez")
    check(st == 200, "/livez")
    B = svc.base
    acme_ing = token("acme", "ingest-bot", ["ingester"])
    acme_ann = token("acme", "ann", ["reader"])
    globex_ing = token("globex", "ingest-bot", ["ingester"])
    globex_bob = token("globex", "bob", ["reader"])
    auth = lambda t: {"authorization": f"Bearer {t}"}

    # --- tokens ---
    st, body, hdrs = request("POST", B + "/v1/query", {"question": "hi"})
    check(st == 401 and is_json_error(body) and "www-authenticate" in {k.lower() for k in hdrs},
          "a missing token is 401 with a JSON reason", f"{st} {body}")
    st, body = curl("POST", B + "/v1/query", b'{"question": "hi"}', {})
    check(st == 401 and is_json_error(body), "curl: a missing token is 401", f"{st} {body}")
    forged = token("acme", "ann", ["admin"], key=STRANGER)
    st, body = curl("POST", B + "/v1/query", b'{"question": "hi"}', auth(forged))
    check(st == 401 and is_json_error(body), "a token under no known key is 401", f"{st} {body}")
    expired = token("acme", "ann", ["reader"], exp=int(time.time()) - 3600)
    st, body, _ = request("POST", B + "/v1/query", {"question": "hi"}, auth(expired))
    check(st == 401, "an expired token is 401", f"{st} {body}")
    cross = token("globex", "mallory", ["admin"], key=SECRETS["acme"], kid="acme")
    st, body, _ = request("POST", B + "/v1/query", {"question": "hi"}, auth(cross))
    check(st == 401, "acme's key cannot issue for globex (401)", f"{st} {body}")
    st, body = curl("PUT", B + "/v1/documents/x", json.dumps({"text": "t", "groups": ["staff"]}).encode(),
                    auth(acme_ann))
    check(st == 403 and is_json_error(body), "a reader that writes is 403", f"{st} {body}")
    st, body = curl("PUT", B + "/v1/documents/x",
                    json.dumps({"text": "t", "groups": ["staff"], "tenant": "globex"}).encode(), auth(acme_ing))
    check(st == 403, "a principal writing into another tenant is 403", f"{st} {body}")
    st, body, _ = request("POST", B + "/v1/query", {"question": "hi", "tenant": "globex"}, auth(acme_ann))
    check(st == 403, "a principal querying another tenant is 403", f"{st} {body}")

    # --- ingest, two tenants, the same document ids ---
    docs = {
        "acme": "The acme launch code is ZEBRA-42. Launch codes are rotated every spring by the acme security team.",
        "globex": "The globex launch code is OTTER-77. Launch codes are rotated every autumn by the globex security team.",
    }
    for tenant, tok in (("acme", acme_ing), ("globex", globex_ing)):
        st, body, _ = request("PUT", B + "/v1/documents/launch.md?ack=applied",
                              {"text": docs[tenant], "groups": ["staff"]}, auth(tok))
        check(st == 200 and body["status"] == "applied" and body["sequence"] >= 1,
              f"{tenant}: PUT ?ack=applied returns the store sequence", f"{st} {body}")

    # --- isolation: answers, streams, cache hits ---
    q = {"question": "What is the launch code?"}
    for rnd in range(2):
        for tok, mine, theirs in ((acme_ann, "ZEBRA", "OTTER"), (globex_bob, "OTTER", "ZEBRA")):
            st, body, _ = request("POST", B + "/v1/query", q, auth(tok))
            text = json.dumps(body)
            check(st == 200 and theirs not in text, f"round {rnd}: no other tenant's text in the answer",
                  text[:300])
            if rnd == 1:
                check(body["from_cache"], "the repeated question is a cache hit, per tenant", text[:200])
            st, events = sse_events(B, "/v1/query", tok, dict(q, bypass_cache=(rnd == 0)))
            names = [e for e, _ in events]
            check(st == 200 and names[0] == "sources" and names[-1] == "done" and
                  all(theirs not in d for _, d in events), f"round {rnd}: the stream is sources, tokens, done, "
                  "with no other tenant's text", str(events)[:300])
    st, body, _ = request("GET", B + "/v1/documents/launch.md", headers=auth(globex_bob))
    check(st == 200, "a reader sees its own tenant's document", f"{st} {body}")
    st, body, _ = request("PUT", B + "/v1/documents/cafeteria.md?ack=applied",
                          {"text": "The acme cafeteria password is PELICAN.", "groups": ["staff"]}, auth(acme_ing))
    check(st == 200, "acme writes a document globex has no twin of", f"{st} {body}")
    for method in ("GET", "DELETE"):
        st, body, _ = request(method, B + "/v1/documents/cafeteria.md", headers=auth(globex_ing))
        check(st == 404 and "PELICAN" not in json.dumps(body) and "acme" not in json.dumps(body),
              f"globex's {method} of acme's document is a plain 404", f"{st} {body}")

    # --- bad input: 4xx with a JSON reason, nothing accepted lost ---
    for what, data, want in (
        ("malformed JSON", b'{"question": ', 400),
        ("invalid UTF-8", b'{"question": "caf\xe9"}', 400),
        ("an empty question", json.dumps({"question": "  "}).encode(), 400),
        ("a 10 MB question", json.dumps({"question": "x" * 10_000_000}).encode(), 413),
        ("an unknown field", json.dumps({"question": "q", "topk": 3}).encode(), 400),
    ):
        st, body = curl("POST", B + "/v1/query", data, auth(acme_ann))
        check(st == want and is_json_error(body), f"{what} is {want} with a JSON reason", f"{st} {body}")
    st, body = curl("PUT", B + "/v1/documents/big",
                    json.dumps({"text": "y" * 2_000_000, "groups": ["staff"]}).encode(), auth(acme_ing))
    check(st == 413 and is_json_error(body), "an oversized body is 413", f"{st} {body}")
    st, body, _ = request("DELETE", B + "/v1/documents/no-such-doc", headers=auth(acme_ing))
    check(st == 404 and is_json_error(body), "deleting an unknown document is 404", f"{st} {body}")
    check(request("GET", B + "/v1/documents/launch.md", headers=auth(acme_ann))[0] == 200,
          "the accepted document is still there")

    # --- 429 when the queue is full, then accepted after draining ---
    batch = {"documents": [{"id": f"bulk-{i}", "text": f"Bulk note {i} about parking.", "groups": ["staff"]}
                           for i in range(9)]}
    st, body, hdrs = request("POST", B + "/v1/documents", batch, auth(acme_ing))
    check(st == 429 and "retry-after" in {k.lower() for k in hdrs} and is_json_error(body),
          "a full queue is 429 with Retry-After", f"{st} {body}")
    st, body = curl("POST", B + "/v1/documents", json.dumps(batch).encode(), auth(acme_ing))
    check(st == 429, "curl: a full queue is 429", f"{st} {body}")
    batch["documents"] = batch["documents"][:8]
    st, body, _ = request("POST", B + "/v1/documents?ack=applied", batch, auth(acme_ing))
    check(st == 200, "the queue accepts once there is room", f"{st} {body}")

    # --- webhooks ---
    def hook(body_bytes, ts=None, secret=WEBHOOK_SECRET, tenant="acme"):
        ts = ts or int(time.time())
        sig = hmac.new(secret.encode(), f"{ts}.".encode() + body_bytes, hashlib.sha256).hexdigest()
        return request("POST", B + "/v1/webhooks/documents", body_bytes,
                       {"x-rag-signature": f"t={ts},v1={sig}", "x-rag-tenant": tenant})
    hb = json.dumps({"changes": [{"op": "upsert", "id": "hooked.md", "groups": ["staff"],
                                  "text": "Visitors must sign in at the front desk of the acme office."}]}).encode()
    st, body, _ = hook(hb)
    check(st == 202, "a signed webhook is queued", f"{st} {body}")
    st, body, _ = hook(hb)
    check(st == 409 and is_json_error(body), "a replayed webhook is refused", f"{st} {body}")
    st, body, _ = hook(hb.replace(b"front", b"back "), secret="not-the-secret-0123456789abcdefghij")
    check(st == 401 and is_json_error(body), "a webhook with a bad signature is 401", f"{st} {body}")
    st, body, _ = hook(hb, tenant="globex")
    check(st == 401, "a webhook for a tenant without a secret is 401", f"{st} {body}")

    # --- the watcher ---
    def sources(question, tok=acme_ann):
        st, events = sse_events(B, "/v1/query", tok, {"question": question, "bypass_cache": True, "top_k": 8},
                                stop_after=1)
        if st != 200 or not events or events[0][0] != "sources":
            fail(f"no sources event: {st} {events}")
        return {(c["document"], c["version"]) for c in json.loads(events[0][1])}

    def within(seconds, cond, what):
        t0 = time.time()
        while time.time() - t0 < seconds:
            if cond():
                check(True, f"{what} ({time.time() - t0:.2f} s)")
                return
            time.sleep(0.05)
        fail(f"{what}: not within {seconds} s")

    ask = "Where do the acme team meet on Mondays?"
    path = os.path.join(watched, "meetings.md")
    with open(path, "w") as f:
        f.write("The acme team meets on Mondays in the blue room.")
    within(2, lambda: any(d == "meetings.md" for d, _ in sources(ask)), "a created file is in answers")
    v1 = [v for d, v in sources(ask) if d == "meetings.md"][0]
    time.sleep(0.01)
    with open(path, "w") as f:
        f.write("The acme team meets on Mondays in the green room, since March.")
    within(2, lambda: any(d == "meetings.md" and v > v1 for d, v in sources(ask)), "an edited file is re-read")
    # An editor's save: write a temporary file, rename it over the original.
    within(2, lambda: len([v for d, v in sources(ask) if d == "meetings.md"]) == 1, "the old version is gone")
    v2 = max(v for d, v in sources(ask) if d == "meetings.md")
    tmp = os.path.join(watched, ".meetings.md.swp")
    with open(tmp, "w") as f:
        f.write("The acme team meets on Mondays in the red room.")
    os.replace(tmp, path)
    within(2, lambda: any(d == "meetings.md" and v > v2 for d, v in sources(ask)), "a save by rename is seen")
    os.rename(path, os.path.join(watched, "rooms.md"))
    within(2, lambda: {d for d, _ in sources(ask)} >= {"rooms.md"} and
           "meetings.md" not in {d for d, _ in sources(ask)}, "a renamed file moves")
    os.remove(os.path.join(watched, "rooms.md"))
    within(2, lambda: "rooms.md" not in {d for d, _ in sources(ask)}, "a deleted file leaves answers")
    check(not any(d in ("meetings.md", "rooms.md") for d, _ in sources(ask, globex_bob)),
          "the other tenant never sees the watched files")

    # An undecodable file: a dead letter with its reason, re-driven once fixed.
    bad_path = os.path.join(watched, "menu.md")
    with open(bad_path, "wb") as f:
        f.write(b"The canteen serves caf\xe9 au lait.")
    letters = []
    def dead():
        letters[:] = request("GET", B + "/v1/dead-letters", headers=auth(acme_ing))[1]["dead_letters"]
        return any(l["document"] == "menu.md" for l in letters)
    within(5, dead, "an undecodable file lands in the dead-letter store")
    letter = [l for l in letters if l["document"] == "menu.md"][0]
    check("not UTF-8" in letter["reason"] and letter["attempts"] >= 1, "the dead letter says why", str(letter))
    st, body, _ = request("GET", B + "/v1/dead-letters", headers=auth(globex_ing))
    check(st == 200 and body["dead_letters"] == [], "the other tenant's dead-letter list is empty", str(body))
    st, body, _ = request("POST", B + f"/v1/dead-letters/{letter['id']}/redrive", headers=auth(globex_ing))
    check(st == 404, "the other tenant cannot re-drive it", f"{st} {body}")
    # Fixed behind the watcher's back (same inode, mtime kept), then re-driven.
    st_before = os.stat(bad_path)
    with open(bad_path, "r+b") as f:
        f.write(b"The canteen serves cafe au lait!")
    os.utime(bad_path, ns=(st_before.st_atime_ns, st_before.st_mtime_ns + 1))
    st, body, _ = request("POST", B + f"/v1/dead-letters/{letter['id']}/redrive", headers=auth(acme_ing))
    check(st == 202, "a fixed file is re-driven", f"{st} {body}")
    within(5, lambda: any(d == "menu.md" for d, _ in sources("What does the canteen serve?")),
           "the re-driven file is in answers")
    within(5, lambda: not dead(), "the dead letter is gone once applied")

    # --- the openai client streams a chat completion with its sources and citations ---
    client = f'''
import json, openai
c = openai.OpenAI(base_url="{B}/v1", api_key="{acme_ann}")
first, last, text = None, None, ""
for chunk in c.chat.completions.create(model="rag", stream=True,
        messages=[{{"role": "user", "content": "What is the launch code?"}}]):
    first = first or chunk
    last = chunk
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
print(json.dumps({{"sources": (first.model_extra or {{}}).get("sources"), "citations": (last.model_extra or {{}}).get("citations"),
    "finish": last.choices[0].finish_reason, "text": text}}))
'''
    r = subprocess.run([args.python, "-c", client], capture_output=True, timeout=300)
    out = r.stdout.decode().strip().splitlines()
    check(r.returncode == 0 and out, "the openai client streams a chat completion", r.stderr.decode()[-500:])
    res = json.loads(out[-1])
    check(res["finish"] == "stop" and res["sources"] and all(s["document"] == "launch.md" or s["document"]
          for s in res["sources"]) and isinstance(res["citations"], list) and "OTTER" not in json.dumps(res),
          "the stream carries sources, citations and no other tenant's text", json.dumps(res)[:400])
    print("   openai answer:", res["text"][:200].replace("\n", " "))

    # --- cancellation: a client that goes away stops the stream (counted) ---
    def counter(text, name):
        return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name))
    metrics0 = request("GET", B + "/metrics", raw=True)[1].decode()
    st, events = sse_events(B, "/v1/query", acme_ann, {"question": "How are launch codes rotated?",
                            "bypass_cache": True}, stop_after=2)
    check(st == 200 and len(events) == 2, "a stream read for two events, then dropped")
    within(5, lambda: counter(request("GET", B + "/metrics", raw=True)[1].decode(), "rag_streams_cancelled_total")
           > counter(metrics0, "rag_streams_cancelled_total"), "the cancelled stream is counted on /metrics")

    # --- /metrics: promtool accepts it; no tenant names in it ---
    st, text, _ = request("GET", B + "/metrics", raw=True)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    check(r.returncode == 0, "promtool check metrics accepts /metrics", (r.stdout + r.stderr).decode()[-500:])
    t = text.decode()
    check("rag_request_duration_seconds_bucket" in t and "rag_requests_total" in t and "stage=" in t,
          "the seed's metric names with stage labels, as bucketed histograms")
    check("acme" not in t and "globex" not in t and "launch.md" not in t, "no tenant or document names in metrics")

    # --- SIGKILL: nothing acknowledged is lost ---
    batch = {"documents": [{"id": f"durable-{i}", "text": f"Durable note {i}: the spare key is in drawer {i}.",
                            "groups": ["staff"]} for i in range(8)]}
    st, body, _ = request("POST", B + "/v1/documents", batch, auth(acme_ing))
    check(st == 202, "8 writes acknowledged as queued", f"{st} {body}")
    acked = [d["id"] for d in batch["documents"]]
    svc.kill(signal.SIGKILL)
    statuses = svc.start()
    log = open(os.path.join(root, "service.log"), errors="replace").read()
    requeued = [l.split("requeued: ")[1].split(",")[0] for l in log.splitlines() if "requeued: " in l]
    print(f"   killed with SIGKILL; the restart re-queued {requeued[-1] if requeued else '?'} changes", flush=True)
    def all_there():
        return all(request("GET", B + f"/v1/documents/{d}", headers=auth(acme_ann))[0] == 200 for d in acked)
    within(60, all_there, f"all {len(acked)} acknowledged writes are there after SIGKILL and restart")
    check(request("GET", B + "/v1/documents/launch.md", headers=auth(globex_bob))[0] == 200,
          "the other tenant's document survived too")

    # --- graceful shutdown ---
    rc = svc.kill(signal.SIGTERM)
    check(rc == 0, "SIGTERM drains and exits 0", str(rc))
    shutil.rmtree(root, ignore_errors=True)
    print("service e2e: all checks passed")


if __name__ == "__main__":
    main()
