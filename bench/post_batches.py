"""The server's own limit in bench/run.py: pre-built gzip batches posted in a tight loop.

Builds the same batches ``avsb segment send`` would (same messages, size and
count limits, gzip level) before the clock starts, then posts them over one
keep-alive client from as many threads as avsb uses. What it measures is
what the server can take, not what a client can build. Prints "built",
waits for a line on stdin, posts, and prints one JSON line.

    python post_batches.py FILE URL WRITE_KEY [THREADS]
"""

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from avsb_cli import backfill  # noqa: E402


def build(path: str) -> tuple[list[bytes], int]:
    """The gzip bodies ``avsb segment send`` would post for the file, and the event count."""
    sent_at = "2024-05-01T12:00:00.000Z"
    batcher = backfill.Batcher()
    bodies: list[bytes] = []
    events = 0
    with open(path, "rb") as fh:
        for part in backfill.parts(fh, "jsonl", backfill.MessageBuilder("default"),
                                   strict=True):
            assert not part.problems, part.problems
            events += len(part.messages)
            bodies += [backfill.gzip_batch(b",".join(b), sent_at)
                       for b in batcher.add(part.messages)]
    if batch := batcher.rest():
        bodies.append(backfill.gzip_batch(b",".join(batch), sent_at))
    return bodies, events


def main() -> None:
    path, url, key = sys.argv[1], sys.argv[2], sys.argv[3]
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    bodies, events = build(path)
    # Built: say so and wait for the go, so the caller can time the posting alone.
    print("built", flush=True)
    sys.stdin.readline()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    lock = threading.Lock()
    todo = iter(bodies)
    failures: list[int] = []
    with httpx.Client(trust_env=False, timeout=60) as client:

        def work() -> None:
            while True:
                with lock:
                    body = next(todo, None)
                if body is None:
                    return
                r = client.post(f"{url}/v1/batch", content=body, headers=headers, auth=(key, ""))
                if r.status_code != 200:
                    failures.append(r.status_code)

        start = time.perf_counter()
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "events": events, "batches": len(bodies),
                      "failures": len(failures)}))


if __name__ == "__main__":
    main()
