"""The limits and knobs of ``segment send``, in a leaf module the other parts import."""

MAX_BATCH_BYTES = 450_000  # Segment: 500 KB of JSON a batch
MAX_BATCH_EVENTS = 2000  # Segment: 2,500 events a batch
MAX_LINE_BYTES = 1 << 20
#: input is read, decoded and built this many bytes at a time (about 250 lines)
CHUNK_BYTES = 1 << 16
BAD_LINES_KEPT = 20
FAILURES_KEPT = 5
#: failed batches in a row after which the rest is not tried
BREAKER = 3
#: gzip level 1: about as small as 6 on this JSON, several times cheaper
GZIP_LEVEL = 1
FORMATS = ("jsonl", "csv")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
REQUIRED = ("experiment_id", "experiment_name", "variation_id", "variation_name", "timestamp")
IDS = ("user_id", "anonymous_id")
FIELDS = REQUIRED[:4] + IDS + ("timestamp",)
BOM = b"\xef\xbb\xbf"
