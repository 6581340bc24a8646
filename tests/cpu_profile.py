"""`make profile`: where a loaded worker spends its CPU, in microseconds per request.

    python tests/cpu_profile.py [--seconds 20] [--threads 2] [--stacks stacks.txt]

Runs `make bench`'s preload and checkout mix against one worker (WORKERS=1) on a fresh
embedded PostgreSQL, samples that worker with py-spy (a sampling profiler, development
dependency only) for the thread holding the GIL, and splits the worker's measured CPU time
per request in proportion to the samples of each part of the code (the deepest frame that
belongs to a known part). Time spent in C with the GIL released (libpq's sends and
receives, system calls) is not sampled, so it is spread over the parts in the same
proportion. Needs ptrace rights over the worker (root, or ptrace_scope 0).
"""

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time

import bench  # puts the project on sys.path
from servers import PROJECT_ROOT

from identity.database.migrations import migrate
from identity.dev.embedded import EmbeddedPostgres

PY_SPY = PROJECT_ROOT / ".venv" / "bin" / "py-spy"
# (part of a frame's file name, part of the service); the first match from the deepest
# frame outwards names the sample's part.
PARTS = [
    ("psycopg2", "database driver (psycopg2)"),
    ("identity/customers/repository.py", "database driver (psycopg2)"),
    ("pythonjsonlogger", "access log"),
    ("/logging/", "access log"),
    ("prometheus_client", "metrics"),
    ("marshmallow", "validation and serialisation (marshmallow)"),
    ("identity/", "service code"),
    ("/json/", "JSON"),
    ("flask/", "Flask and Werkzeug"),
    ("werkzeug/", "Flask and Werkzeug"),
    ("waitress/", "waitress (event loop, parsing, writing)"),
    ("threading.py", "thread hand-offs"),
    ("queue.py", "thread hand-offs"),
]


def part_of(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for fragment, part in PARTS:
            if fragment in frame:
                return part
    return "other"


def parts(stacks_file: str) -> collections.Counter:
    samples: collections.Counter = collections.Counter()
    with open(stacks_file) as stacks:
        for line in stacks:
            stack, _, count = line.rstrip().rpartition(" ")
            samples[part_of(stack)] += int(count)
    return samples


def profile(args, database_url: str) -> None:
    workload = bench.Workload(args.seed)
    with bench._service(database_url, args.threads, workers=1) as service:
        bench.preload_and_analyze(service, workload, database_url, args.concurrency)
        mixed = bench._requests(workload.checkouts(args.seconds * 6000), service.port)
        sampler = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(service.worker_pids()[0]), "--gil",
             "--rate", "200", "--format", "raw", "--output", args.stacks,
             "--duration", str(args.seconds + 1)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # py-spy attaches
        figures = bench.drive(service, mixed, args.concurrency, args.seconds).report(
            f"mixed, concurrency {args.concurrency}, sampled"
        )
        sampler.wait()
    samples = parts(args.stacks)
    total = sum(samples.values())
    cpu_us = figures["service_cpu_ms"] * 1000
    print(f"\nworker CPU {cpu_us:.0f} µs per request; {total} samples of the GIL holder")
    for part, count in samples.most_common():
        print(f"  {part:<46} {100 * count / total:5.1f} %  {cpu_us * count / total:6.0f} µs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)))
    parser.add_argument("--stacks", default=f"{tempfile.gettempdir()}/identity-stacks.txt")
    args = parser.parse_args()
    with EmbeddedPostgres(durable=True) as server:
        migrate(server.url, PROJECT_ROOT / "sql")
        profile(args, server.url)
    print(f"stacks (py-spy raw format, for flame graphs): {args.stacks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
