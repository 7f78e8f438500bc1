"""What recording a figure costs: the calls the send pipeline, the HTTP middleware and the pool make, in a
single process (values in memory) and in the multiprocess mode `serve` and `worker` use (values in
memory-mapped files), and the scrape of a command's directory.

Prints figures (not a test):

    PYTHONPATH=. python bench/metrics.py [--calls 200000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import sys, time
from emailkit.metrics import record, process
calls = int(sys.argv[1])

def per_call(fn):
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6

def one_chunk():
    record.emails("campaign", "smtp", "sent", 200)
    record.emails("campaign", "smtp", "failed", 0)
    record.emails("campaign", "smtp", "deferred", 0)

chunk = per_call(one_chunk)
timed = per_call(lambda: record.send_duration("smtp", 0.004))
http = per_call(lambda: record.http_request("/graphql", "POST", 200, 0.003))
pool = per_call(lambda: (record.pool("in_use", 1), record.pool("in_use", -1)))
start = time.perf_counter()
for _ in range(20):
    process.exposition(None)
scrape = (time.perf_counter() - start) / 20 * 1e3
print(f"{chunk:.2f} {timed:.2f} {http:.2f} {pool:.2f} {scrape:.2f}")
"""


def run(calls: int, multiprocess: bool) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory() as directory:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(calls)], env=env, capture_output=True, text=True, check=True
        ).stdout
    return [float(x) for x in out.split()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    print(
        f"{'mode':<14} {'chunk (3 counts) µs':>20} {'send timing µs':>15} {'HTTP request µs':>16} "
        f"{'pool out+in µs':>15} {'scrape ms':>10}"
    )
    for multiprocess in (False, True):
        best = min((run(args.calls, multiprocess) for _ in range(3)), key=lambda r: r[0])
        name = "multiprocess" if multiprocess else "single"
        print(
            f"{name:<14} {best[0]:>20.2f} {best[1]:>15.2f} {best[2]:>16.2f} {best[3]:>15.2f} {best[4]:>10.2f}"
        )


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.1f} s)")
