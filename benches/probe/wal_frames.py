#!/usr/bin/env python3
"""WAL frames and disk bytes per forwarded event, for the store's layout and for candidate
layouts (issue 15), without building the server.

It replays, with Python's sqlite3, the rows the writer commits for the storage phase's workload
(benches/load/storage.rs): a forwarding journey (entry, then a send step), random UUID
messageIds, 5,000 users, 19 events per commit (what the server's group commit averages with 32
clients), then each commit's delivery outcomes in a commit of their own. Values are random bytes
of the sizes the server stores once compressed (event body 124 B, context 152 B, payload
180 B). A hold journey is first filled with `--waiting` instances, one user each.

Each layout is a schema plus the statements of one event; the figures are the WAL frames
appended per event (from `PRAGMA wal_checkpoint` after each checkpoint, one per about a second
of the server's rate) and the bytes the process wrote to storage per event (`/proc/self/io`,
WAL and checkpoints both, as the storage phase counts them).

    python3 benches/probe/wal_frames.py              # every layout, 10,000 waiting
    python3 benches/probe/wal_frames.py --waiting 100000 --events 40000 current log
    python3 benches/probe/wal_frames.py --by-table current   # frames by table and index

With `--by-table` it also counts, per b-tree, the distinct pages among each checkpoint interval's
frames: what the checkpoint copies into the database file.
"""

import argparse
import os
import random
import sqlite3
import tempfile
import time
import uuid

PAGE = 2048
BODY, CONTEXT, PAYLOAD = 124, 152, 180
USERS = 5_000
PER_COMMIT = 19
CHECKPOINT_EVERY = 3_000  # events: about one second of the storage phase

CURRENT = """
CREATE TABLE profiles (profile_key TEXT PRIMARY KEY, anonymous INTEGER NOT NULL DEFAULT 0,
    traits TEXT NOT NULL DEFAULT '{}', created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE events (seq INTEGER PRIMARY KEY, profile_key TEXT NOT NULL, message_id TEXT NOT NULL,
    type TEXT NOT NULL, event TEXT, received_at INTEGER NOT NULL, body BLOB NOT NULL);
CREATE INDEX events_by_profile ON events (profile_key, seq);
CREATE INDEX events_by_message_id ON events (message_id);
CREATE TABLE instances (instance_id INTEGER PRIMARY KEY, profile_key TEXT NOT NULL, journey_id TEXT NOT NULL,
    version INTEGER NOT NULL, state TEXT NOT NULL, step_id TEXT, unique_value TEXT, context BLOB NOT NULL,
    resets INTEGER NOT NULL DEFAULT 0, due_at INTEGER, ordinal INTEGER NOT NULL, entered_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL);
CREATE INDEX instances_active ON instances (profile_key) WHERE state = 'active';
CREATE INDEX instances_due ON instances (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX instances_by_journey ON instances (journey_id, instance_id);
CREATE INDEX instances_by_profile ON instances (profile_key, instance_id);
CREATE INDEX instances_finished ON instances (updated_at) WHERE state != 'active';
CREATE TABLE journey_memory (profile_key TEXT NOT NULL, journey_id TEXT NOT NULL, entries INTEGER NOT NULL,
    sticky TEXT, PRIMARY KEY (profile_key, journey_id)) WITHOUT ROWID;
CREATE TABLE transitions (seq INTEGER PRIMARY KEY, profile_key TEXT NOT NULL, instance_id INTEGER,
    journey_id TEXT NOT NULL, version INTEGER NOT NULL, at INTEGER NOT NULL, what TEXT NOT NULL,
    step_id TEXT, detail TEXT);
CREATE INDEX transitions_by_instance ON transitions (instance_id, seq);
CREATE TABLE journey_stats (journey_id TEXT NOT NULL, version INTEGER NOT NULL, kind TEXT NOT NULL,
    step_id TEXT NOT NULL, label TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (journey_id, version, kind, step_id, label)) WITHOUT ROWID;
CREATE TABLE deliveries (delivery_id TEXT PRIMARY KEY, profile_key TEXT NOT NULL, instance_id INTEGER NOT NULL,
    journey_id TEXT NOT NULL, step_id TEXT NOT NULL, destination_id TEXT NOT NULL, payload BLOB NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER, last_status INTEGER,
    last_error TEXT, expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries (destination_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_created ON deliveries (created_at);
CREATE INDEX deliveries_by_profile ON deliveries (profile_key, destination_id, created_at);
"""

# A person's deliveries found through their instances (an index by instance id, which grows with
# time, so a new instance's delivery appends); frequency caps count through a partial index of only
# the deliveries to destinations with a cap (none here).
BY_INSTANCE = CURRENT.replace(
    "CREATE INDEX deliveries_by_profile ON deliveries (profile_key, destination_id, created_at);",
    "CREATE INDEX deliveries_by_instance ON deliveries (instance_id);",
)

# The three per-profile indexes replaced by one per-profile log: an event's rows of one profile
# (its event, instance and delivery) are neighbours in one b-tree, so they share a leaf.
LOG = (
    CURRENT.replace("CREATE INDEX events_by_profile ON events (profile_key, seq);", "")
    .replace("CREATE INDEX instances_by_profile ON instances (profile_key, instance_id);", "")
    .replace("CREATE INDEX deliveries_by_profile ON deliveries (profile_key, destination_id, created_at);", "")
    + """
CREATE TABLE profile_log (profile_key TEXT NOT NULL, seq INTEGER NOT NULL, kind INTEGER NOT NULL,
    ref TEXT NOT NULL, PRIMARY KEY (profile_key, seq)) WITHOUT ROWID;
"""
)

# As LOG, and messageIds checked elsewhere (in memory, say): no index by messageId.
LOG_NO_MID = LOG.replace("CREATE INDEX events_by_message_id ON events (message_id);", "")

# Today's store (`deliveries-by-instance-no-memory`) without its index by messageId.
BY_INSTANCE_NO_MID = BY_INSTANCE.replace("CREATE INDEX events_by_message_id ON events (message_id);", "")

# As BY_INSTANCE_NO_MID, with a profile's events and instances in one per-profile log: an event's
# row and its instance's are neighbours, so they share a leaf; deliveries stay found through
# instances.
LOG2_NO_MID = (
    BY_INSTANCE_NO_MID.replace("CREATE INDEX events_by_profile ON events (profile_key, seq);", "")
    .replace("CREATE INDEX instances_by_profile ON instances (profile_key, instance_id);", "")
    + """
CREATE TABLE profile_log (profile_key TEXT NOT NULL, seq INTEGER NOT NULL, instance_id INTEGER,
    PRIMARY KEY (profile_key, seq)) WITHOUT ROWID;
"""
)

LAYOUTS = {
    # name: (schema, writes a profile_log, writes journey_memory)
    "current": (CURRENT, False, True),
    "deliveries-by-instance": (BY_INSTANCE, False, True),
    "deliveries-by-instance-no-memory": (BY_INSTANCE, False, False),
    "no-mid-no-memory": (BY_INSTANCE_NO_MID, False, False),
    "log2-no-mid-no-memory": (LOG2_NO_MID, 2, False),
    "log": (LOG, True, True),
    "log-no-mid": (LOG_NO_MID, True, True),
    "log-no-mid-no-memory": (LOG_NO_MID, True, False),
}


def write_bytes():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def open_db(path, schema):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {PAGE}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.executescript(schema)
    return conn


class Run:
    def __init__(self, conn, log, memory):
        self.conn, self.log, self.memory = conn, log, memory
        self.seq = 0
        self.instance = 0
        self.now = 1_764_000_000_000

    def next_seq(self):
        self.seq += 1
        return self.seq

    def event(self, user, event, due):
        c = self.conn
        mid = str(uuid.uuid4())
        if self.mid_index:
            c.execute("SELECT 1 FROM events WHERE message_id = ?", (mid,)).fetchone()
        c.execute(
            "INSERT INTO profiles VALUES (?, 0, '{}', ?, ?) ON CONFLICT (profile_key) DO NOTHING",
            (user, self.now, self.now),
        )
        seq = self.next_seq()
        c.execute(
            "INSERT INTO events VALUES (?, ?, ?, 'track', ?, ?, ?)",
            (seq, user, mid, event, self.now, os.urandom(BODY)),
        )
        if self.log == 2:
            c.execute("INSERT INTO profile_log VALUES (?, ?, NULL)", (user, seq))
        elif self.log:
            c.execute("INSERT INTO profile_log VALUES (?, ?, 0, ?)", (user, seq, str(seq)))
        journey = "wait" if due else "forward"
        if self.memory:
            c.execute(
                "SELECT entries FROM journey_memory WHERE profile_key = ? AND journey_id = ?", (user, journey)
            ).fetchone()
            c.execute(
                "INSERT INTO journey_memory VALUES (?, ?, 1, NULL) ON CONFLICT (profile_key, journey_id)"
                " DO UPDATE SET entries = entries + 1",
                (user, journey),
            )
        self.instance += 1
        inst = self.instance
        state = "active" if due else "completed"
        c.execute(
            "INSERT INTO instances VALUES (?, ?, ?, 1, ?, ?, NULL, ?, 0, ?, 1, ?, ?)",
            (inst, user, journey, state, "hold" if due else "send", os.urandom(CONTEXT), due, self.now, self.now),
        )
        if self.log == 2:
            c.execute("INSERT INTO profile_log VALUES (?, ?, ?)", (user, self.next_seq(), inst))
        elif self.log:
            c.execute("INSERT INTO profile_log VALUES (?, ?, 1, ?)", (user, self.next_seq(), str(inst)))
        steps = ["entered", "step"] if due else ["entered", "step", "send", "completed"]
        for what in steps:
            c.execute(
                "INSERT INTO transitions VALUES (?, ?, ?, ?, 1, ?, ?, 's', NULL)",
                (self.next_seq(), user, inst, journey, self.now, what),
            )
        for label in steps:
            c.execute(
                "INSERT INTO journey_stats VALUES (?, 1, 'total', '', ?, 1) ON CONFLICT DO UPDATE SET count = count + 1",
                (journey, label),
            )
        if due:
            return None
        delivery = f"{self.now:012x}-{uuid.uuid4().hex[:20]}"
        c.execute(
            "INSERT INTO deliveries VALUES (?, ?, ?, ?, 'send', 'sink', ?, 'pending', 0, ?, NULL, NULL, ?, ?, ?)",
            (delivery, user, inst, journey, os.urandom(PAYLOAD), self.now, self.now + 86_400_000, self.now, self.now),
        )
        if self.log and self.log != 2:
            c.execute("INSERT INTO profile_log VALUES (?, ?, 2, ?)", (user, self.next_seq(), delivery))
        return delivery


def count_frames(conn, wal, by_table, distinct):
    """Adds the frames in the WAL file, by the b-tree their page belongs to (from `dbstat`), and
    the distinct pages among them (what the checkpoint that follows copies into the database)."""
    owner = dict(conn.execute("SELECT pageno, name FROM dbstat").fetchall())
    seen = set()
    with open(wal, "rb") as f:
        f.seek(32)  # the WAL header
        salt = None
        while True:
            header = f.read(24)
            if len(header) < 24:
                break
            if salt is None:
                salt = header[8:16]
            elif header[8:16] != salt:
                break  # frames left over from before the WAL started over
            page = int.from_bytes(header[:4], "big")
            name = owner.get(page, "(free or new)")
            by_table[name] = by_table.get(name, 0) + 1
            if page not in seen:
                seen.add(page)
                distinct[name] = distinct.get(name, 0) + 1
            f.seek(PAGE, 1)


def probe(name, waiting, events, dirpath, by_table=None, distinct=None):
    schema, log, memory = LAYOUTS[name]
    path = os.path.join(dirpath, f"{name}.db")
    conn = open_db(path, schema)
    run = Run(conn, log, memory)
    run.mid_index = "events_by_message_id" in schema
    # The fill: `waiting` users each waiting at a hold, in large transactions.
    for start in range(0, waiting, 1_000):
        conn.execute("BEGIN")
        for i in range(start, min(start + 1_000, waiting)):
            run.event(f"waiting-{i:07}", "Start", run.now + 7 * 86_400_000)
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    written0 = write_bytes()
    frames = 0
    started = time.monotonic()
    users = [f"user-{u:05}" for u in range(USERS)]
    done = 0
    while done < events:
        conn.execute("BEGIN")
        deliveries = []
        for _ in range(PER_COMMIT):
            run.now += 1
            deliveries.append(run.event(random.choice(users), "Forwarded", None))
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        for d in deliveries:
            conn.execute(
                "UPDATE deliveries SET status = 'succeeded', attempts = 1, next_attempt_at = NULL,"
                " last_status = 200, updated_at = ? WHERE delivery_id = ?",
                (run.now, d),
            )
        conn.execute("COMMIT")
        before = done
        done += PER_COMMIT
        if done // CHECKPOINT_EVERY != before // CHECKPOINT_EVERY or done >= events:
            if by_table is not None:
                count_frames(conn, path + "-wal", by_table, distinct)
            _, log_frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            frames += log_frames
    written = write_bytes() - written0
    seconds = time.monotonic() - started
    conn.close()
    return frames / done, written / done, done / seconds


def main():
    global PER_COMMIT, PAGE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("layouts", nargs="*", default=list(LAYOUTS))
    ap.add_argument("--waiting", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=30_000)
    here = os.path.dirname(os.path.abspath(__file__))
    default_dir = os.path.join(here, "..", "..", "target", "tmp")
    ap.add_argument("--per-commit", type=int, default=PER_COMMIT)
    ap.add_argument("--page", type=int, default=PAGE)
    ap.add_argument("--by-table", action="store_true", help="WAL frames by b-tree (slower)")
    ap.add_argument("--dir", default=default_dir, help="where the databases go (a disk, not tmpfs)")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    random.seed(15)
    PER_COMMIT, PAGE = args.per_commit, args.page
    print(f"{args.waiting:,} waiting, {args.events:,} forwarded events, {PER_COMMIT} per commit, {PAGE} B pages")
    print(f"{'layout':24} {'WAL frames/event':>17} {'written/event':>14} {'events/s':>9}")
    for name in args.layouts:
        by_table = {} if args.by_table else None
        distinct = {}
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            f, w, rate = probe(name, args.waiting, args.events, d, by_table, distinct)
        print(f"{name:24} {f:17.2f} {w / 1000:11.1f} KB {rate:9,.0f}")
        if by_table:
            print(f"    {'b-tree':34} {'frames/event':>12} {'checkpointed pages/event':>25}")
            for table, n in sorted(by_table.items(), key=lambda kv: -kv[1]):
                print(f"    {table:34} {n / args.events:12.2f} {distinct.get(table, 0) / args.events:25.2f}")


if __name__ == "__main__":
    main()
