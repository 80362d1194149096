#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ from the project's real documents:
examples/*/journey.json and events.jsonl, the captured SDK requests in
tests/fixtures/sdk-requests/, and the documents of docs/SPEC.md, plus a few hand-made edge cases.
Run from the repository root: python3 fuzz/make_seeds.py. Every seed is compact JSON (or raw
bytes for the ingest targets) of at most MAX_LEN bytes, the -max_len the targets are run with."""

import base64
import glob
import gzip
import json
import os
import shutil

MAX_LEN = 4096
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def compact(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    assert len(data) <= MAX_LEN, (target, name, len(data))
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data, mtime=0):
    return gzip.compress(data, mtime=mtime)


examples = {}
for d in sorted(glob.glob(os.path.join(ROOT, "examples", "*", ""))):
    name = os.path.basename(os.path.dirname(d))
    with open(os.path.join(d, "journey.json")) as f:
        journey = json.load(f)
    with open(os.path.join(d, "events.jsonl")) as f:
        events = [json.loads(line) for line in f if line.strip()]
    examples[name] = (journey, events)

sdk = {}
for p in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "sdk-requests", "*.json"))):
    with open(p) as f:
        req = json.load(f)
    name = os.path.basename(p)[:-5]
    if "body_base64" in req:
        sdk[name] = base64.b64decode(req["body_base64"])
    else:
        sdk[name] = compact(req["body"]).encode()

# A journey that uses every step type, every operator, a mapping, exit rules and unique_by.
rich = {
    "id": "all-features",
    "name": "Every feature",
    "entry": {
        "event": "Cart_Viewed",
        "where": [
            {"property": "cart_ID", "exists": True},
            {"property": "total", "gte": 10},
            {"property": "items.0.sku", "starts_with": "X"},
            {"path": "context.locale", "in": ["en-GB", "fr-FR"]},
        ],
        "reentry": "if_not_active",
        "unique_by": "cart_ID",
    },
    "exit": {"events": [{"event": "Account_Deleted", "where": [{"property": "hard", "equals": True}]}],
             "send": "notify_exit"},
    "steps": [
        {"id": "wait", "type": "hold_until", "max_hold": "2h",
         "branches": [
             {"name": "changed", "event": "Cart_Modified", "reset_timer": True, "as": "modified"},
             {"name": "ordered", "event": "Order", "where": [{"property": "total", "lt": 1e6}], "next": "split"},
         ],
         "on_timeout": "pause"},
        {"id": "pause", "type": "delay", "duration": "90m", "next": "ab"},
        {"id": "ab", "type": "random_split", "sticky": True,
         "branches": [{"name": "a", "percent": 50, "next": "remind"}, {"name": "b", "percent": 50, "next": None}]},
        {"id": "split", "type": "split",
         "branches": [
             {"name": "vip", "where": [{"path": "traits.tier", "not_in": ["free"]},
                                      {"path": "context.Order.total", "gt": 100}], "next": "remind"},
             {"name": "fr", "where": [{"path": "traits.email", "contains": "@"},
                                     {"path": "traits.plan", "not_equals": None},
                                     {"path": "context.Cart_Viewed.n", "lte": 3}], "next": "remind"},
         ],
         "else": None},
        {"id": "remind", "type": "send", "destination": "crm", "event_name": "Cart Reminder",
         "traits": ["email", "first_name"],
         "mapping": {"to": {"@path": "$.properties.email"}, "text": {"@template": "Hi {{properties.first_name}}, {{properties.journey_context.Cart_Viewed.cart_ID}}"},
                     "list": [{"@path": "$.properties.journey_metadata.step_id"}, 1, None]},
         "next": None},
        {"id": "notify_exit", "type": "send", "destination": "crm", "traits": ["*"]},
    ],
}
rich_events = [
    {"at": "+0s", "message": {"type": "identify", "userId": "23", "anonymousId": "anon-1",
                              "traits": {"email": "ada@example.com", "first_name": "Ada", "tier": "gold"}}},
    {"at": "+0s", "message": {"type": "track", "userId": "23", "event": "Cart_Viewed", "context": {"locale": "en-GB"},
                              "properties": {"cart_ID": "c1", "total": 120.5, "items": [{"sku": "X1"}]}}},
    {"at": "+30m", "message": {"type": "track", "anonymousId": "anon-1", "event": "Cart_Modified",
                               "properties": {"cart_ID": "c1"}, "timestamp": "1970-01-01T00:29:00Z"}},
    {"at": "+1h", "message": {"type": "alias", "userId": "24", "previousId": "23"}},
    {"at": "+1h30m", "message": {"type": "track", "userId": "23", "event": "Order", "messageId": "m1",
                                 "properties": {"cart_ID": "c1", "total": 130}}},
    {"at": "+1h30m", "message": {"type": "track", "userId": "23", "event": "Order", "messageId": "m1",
                                 "properties": {"cart_ID": "c1", "total": 130}}},
    {"at": "+5h", "message": {"event": "Account_Deleted", "userId": "23", "properties": {"hard": True}}},
]

for t in os.listdir(SEEDS) if os.path.isdir(SEEDS) else []:
    shutil.rmtree(os.path.join(SEEDS, t))

# journey
for name, (journey, _) in examples.items():
    write("journey", name, compact(journey))
write("journey", "all-features", compact(rich))
deep = {"id": "deep", "entry": {"event": "E", "where": [{"property": "a", "equals": None}]},
        "steps": [{"id": "s", "type": "send", "destination": "d"}]}
v = 0
for _ in range(120):
    v = [v]
deep["entry"]["where"][0]["equals"] = v
write("journey", "deep-operand", compact(deep))
write("journey", "huge-numbers", compact({"id": "n", "entry": {"event": "E", "where": [
    {"property": "a", "gt": 1e308}, {"property": "b", "lt": -1e308}, {"property": "c", "equals": 18446744073709551615},
    {"property": "d", "gte": -9223372036854775808}]}, "steps": [
    {"id": "s", "type": "delay", "duration": "18446744073709551615s", "next": "t"},
    {"id": "t", "type": "hold_until", "max_hold": "366d", "branches": [{"event": "E"}]}]}))
write("journey", "cycle", compact({"id": "c", "entry": {"event": "E"}, "steps": [
    {"id": "a", "type": "delay", "duration": "1s", "next": "b"},
    {"id": "b", "type": "split", "branches": [{"name": "x", "where": [], "next": "a"}], "else": "z"}]}))

# destination
for name, doc in {
    "spec-webhook": {"type": "webhook", "url": "https://hooks.example.com/in", "method": "POST",
                     "headers": {"X-Api-Key": "k"}, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                     "timeout": "10s", "max_attempts": 8},
    "segment": {"type": "segment", "url": "http://127.0.0.1:8787/v1/batch", "write_key": "wk",
                "rate_limit": 100, "concurrency": 4},
    "password-url": {"type": "webhook", "url": "https://user:pa:ss@h.example:8443/x?y=@z#f", "method": "patch",
                     "headers": {"Authorization": "Bearer t", "x-b": ""}, "timeout": "5m"},
    "masked": {"type": "webhook", "url": "https://u:********@h.example/", "headers": {"X-Key": "********"}},
    "bad": {"type": "ftp", "url": "ftp://h", "method": "GET", "headers": {"Host": "h", "bad name": "v\n"},
            "timeout": "0s", "max_attempts": 0, "secret": 1, "extra": True},
}.items():
    write("destination", name, compact(doc))

# simulation
def sim(journey, events, traits=None, start=None):
    doc = {"journey": journey, "events": events}
    if traits is not None:
        doc["traits"] = traits
    if start is not None:
        doc["start"] = start
    while len(compact(doc).encode()) > MAX_LEN and doc["events"]:
        doc["events"] = doc["events"][:-1]
    return compact(doc)

for name, (journey, events) in examples.items():
    write("simulation", name, sim(journey, events))
write("simulation", "all-features", sim(rich, rich_events, {"plan": "pro"}, "2026-11-28T10:17:41.908Z"))
write("simulation", "far-offsets", sim(examples["cart-abandonment-cart-viewed"][0], [
    {"at": "+15000000w", "message": e["message"]} for e in examples["cart-abandonment-cart-viewed"][1][:2]]))

# conditions: a journey, then the root it is evaluated on
for name, (journey, events) in examples.items():
    root = next((e["message"] for e in events if e["message"].get("event") == journey["entry"]["event"]),
                events[0]["message"])
    write("conditions", name, compact(journey) + "\n" + compact(root))
write("conditions", "all-features-message", compact(rich) + "\n" + compact(rich_events[1]["message"]))
write("conditions", "all-features-split-root", compact(rich) + "\n" + compact(
    {"context": {"Order": {"total": 130}, "Cart_Viewed": {"n": 2}}, "traits": {"tier": "gold", "email": "a@b", "plan": None}}))
write("conditions", "where-list", compact([
    {"property": "a.0.b", "equals": [1, {"x": None}]}, {"path": "context.x", "not_equals": 1.0},
    {"property": "n", "in": [1, "1", None]}, {"property": "n", "not_in": []}, {"property": "s", "exists": False},
    {"property": "n", "gt": -1}, {"property": "n", "gte": 0}, {"property": "n", "lt": 1e300}, {"property": "n", "lte": 0.5},
    {"property": "s", "contains": ""}, {"property": "tags", "contains": "vip"}, {"property": "s", "starts_with": "\u00e9"},
]) + "\n" + compact({"context": {"x": 1}, "properties": {"a": [{"b": [1, {"x": None}]}], "n": 18446744073709551615,
                                                        "s": "\u00e9t\u00e9", "tags": ["vip"]}}))
write("conditions", "split-list", compact([
    {"path": "context.E.a", "equals": 1}, {"path": "traits.email", "starts_with": "a"}
]) + " " + compact({"context": {"E": {"a": 1}}, "traits": {"email": "ada@x"}}))

# mapping: a template, then the payload
payload = {"type": "track", "event": "Cart Reminder", "userId": "23", "messageId": "sim-1",
           "timestamp": "1970-01-01T02:00:00.000Z",
           "properties": {"journey_context": {"Cart_Viewed": {"cart_ID": "123", "items": [{"sku": "X1"}]}},
                          "journey_metadata": {"journey_id": "j", "journey_version": 3, "instance_id": "1", "step_id": "remind"},
                          "email": "ada@example.com", "first_name": "Ada"}}
write("mapping", "spec", compact(rich["steps"][4]["mapping"]) + "\n" + compact(payload))
write("mapping", "paths", compact({
    "a": {"@path": "$"}, "b": {"@path": "$."}, "c": {"@path": "properties.journey_context.Cart_Viewed.items.0.sku"},
    "d": {"@path": "$.properties..email"}, "e": {"@path": 5}, "f": [{"@path": "$.nope"}, {"@template": None}],
    "g": {"@path": "$.a", "other": 1}, "h": {"@template": "{{properties}} {{ $.userId }} {{unclosed"},
    "i": {"@template": "{{}}{{{{x}}}}}}"}}) + "\n" + compact(payload))
write("mapping", "scalars", "\"text\" []")

# ingest_single: each example message, and the SDK batches' messages
n = 0
for name, (_, events) in examples.items():
    for e in events:
        n += 1
        write("ingest_single", f"{name}-{n}", compact(e["message"]))
for name, body in sdk.items():
    if name.endswith("-gzip"):
        continue
    for i, m in enumerate(json.loads(body)["batch"]):
        write("ingest_single", f"{name}-{i}", compact(m))
write("ingest_single", "edge-ids-and-times", compact({
    "userId": 1.5e300, "anonymousId": "", "event": "E", "writeKey": 7, "messageId": -0,
    "timestamp": "+262143-12-31T23:59:59Z", "sentAt": "-262144-01-01T00:00:00", "properties": None,
    "context": {"library": {"name": "x"}}, "integrations": {}}))

# ingest_batch: the SDK bodies, example events as batches, edge cases
for name, body in sdk.items():
    if name.endswith("-gzip"):
        body = gzip.decompress(body)
    write("ingest_batch", name, body)
for name, (_, events) in examples.items():
    batch = {"batch": [e["message"] for e in events], "writeKey": "WRITE_KEY",
             "context": {"ip": "1.2.3.4"}, "integrations": {"All": True}, "sentAt": "2026-11-28T10:17:41.908Z"}
    while len(compact(batch).encode()) > MAX_LEN:
        batch["batch"] = batch["batch"][:-1]
    write("ingest_batch", name, compact(batch))
write("ingest_batch", "mixed", compact({"batch": [
    {"type": "identify", "userId": 23, "traits": {"a": 1}, "timestamp": "2026-11-28T10:17:41"},
    {"type": "alias", "userId": "a", "previousId": "a"}, {"type": "group", "anonymousId": "x", "groupId": "g"},
    {"type": "page", "anonymousId": "x", "sentAt": "2026-11-28T10:17:41.908+01:00"},
    {"type": "screen", "userId": "x", "context": 1}, {"type": "bogus"}, [], 1, None, "s",
    {"type": "track", "userId": "u"}], "sentAt": None, "context": [], "integrations": None}))
write("ingest_batch", "not-an-object", b" [ {\"batch\": []} ] ")

# ingest_batch_gzip: the captured gzip body, the other batches gzipped, a bomb, two members
write("ingest_batch_gzip", "analytics-python-2.4.0-gzip", sdk["analytics-python-2.4.0-gzip"])
for name, body in sdk.items():
    if not name.endswith("-gzip"):
        write("ingest_batch_gzip", name, gz(body))
bomb = gz(b'{"batch":[' + b" " * (600 * 1024) + b"]}")
write("ingest_batch_gzip", "bomb-600k", bomb)
write("ingest_batch_gzip", "exactly-the-limit", gz(b'{"batch":[]}' + b" " * (500 * 1024 - 12)))
write("ingest_batch_gzip", "two-members", gz(b'{"batch":[{"type":"track",') + gz(b'"userId":"u","event":"E"}]}'))
write("ingest_batch_gzip", "truncated", gz(compact({"batch": []}).encode())[:-5])
