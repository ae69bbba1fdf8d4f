"""The peer in bench/run.py: segment-analytics-python 2.4.0 sends the same enrollments.

Runs under its own venv (never the project's), with the library's defaults
except ``max_queue_size``, raised so that nothing is dropped, and ``host``,
pointed at the local server. Prints one JSON line: seconds, dropped, errors.

    python peer_analytics.py FILE HOST WRITE_KEY COUNT
"""

import json
import sys
import time
from datetime import datetime

import segment.analytics as analytics


def main() -> None:
    path, host, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    analytics.write_key = key
    analytics.host = host
    analytics.max_queue_size = count + 1  # drop nothing
    errors = []
    analytics.on_error = lambda error, batch: errors.append(str(error))
    start = time.perf_counter()
    dropped = 0
    with open(path, "rb") as fh:
        for line in fh:
            rec = json.loads(line)
            ok, _ = analytics.track(
                user_id=rec.get("user_id"),
                anonymous_id=rec.get("anonymous_id"),
                event="avsb_experiment",
                properties={
                    "experiment_id": rec["experiment_id"],
                    "experiment_name": rec["experiment_name"],
                    "variation_id": rec["variation_id"],
                    "variation_name": rec["variation_name"],
                    "event_name": "experiment_viewed",
                },
                timestamp=datetime.fromisoformat(rec["timestamp"]),
            )
            dropped += not ok
    analytics.flush()
    analytics.shutdown()
    print(json.dumps({"seconds": time.perf_counter() - start, "dropped": dropped,
                      "errors": len(errors)}))


if __name__ == "__main__":
    main()
