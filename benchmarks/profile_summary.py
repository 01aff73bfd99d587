"""Where a worker's Python CPU goes: py-spy samples attributed to the parts of the worker path.

Takes the raw (collapsed-stack) files that ``worker_throughput.py --profile PREFIX --profile-gil``
writes, one per worker process; with ``--gil`` py-spy samples only the thread holding the GIL,
so the shares are shares of the process's Python CPU time.

    python benchmarks/profile_summary.py /tmp/prof.*.txt
"""

from __future__ import annotations

import re
import sys
from collections import Counter

HOOK = re.compile(r";(\w+)\.((?:before|after)_\w+) \(")


def category(stack: str) -> str:
    thread = stack.split(";", 1)[0]
    # The group commit runs on whichever thread leads it (a worker thread, or the recorder's
    # outcome thread); the committer thread of the code before 2026-12-04 was "tickwork-commit".
    if "AttemptRecorder._lead " in stack or "tickwork-commit" in thread:
        if "pymysql" in stack or "MySQLdb" in stack:
            if "converters" in stack or "escape" in stack or "literal" in stack:
                return "group commit: escaping values"
            return "group commit: MySQL driver (send, read, parse the results)"
        return "group commit: grouping, SQL text, waking callers"
    if "ConsumerThread" in stack:
        if "basic_ack" in stack or "post_process" in stack or "handle_acks" in stack:
            return "consumer thread: acks (pika)"
        if "Message.decode" in stack:
            return "consumer thread: decoding messages"
        return "consumer thread: pika receive / poll"
    if "WorkerThread" in stack:
        if HOOK.search(stack):
            if "recorder.py" in stack:
                return "worker threads: RunLog waiting for a claim/finish, or queueing a success"
            return "worker threads: middleware hooks"
        if "emit_" in stack:
            return "worker threads: Dramatiq's emit loops"
        return "worker threads: Dramatiq process_message, the actor"
    if "tickwork-outcome" in thread:
        return "fallback outcome thread"
    return "other threads (heartbeat, time limit, main)"


def main(paths: list[str]) -> None:
    total = 0
    parts: Counter[str] = Counter()
    hooks: Counter[str] = Counter()
    for path in paths:
        with open(path) as f:
            for raw in f:
                line = raw.rstrip()
                if not line:
                    continue
                stack, count = line.rsplit(" ", 1)
                n = int(count)
                total += n
                parts[category(stack)] += n
                hook = HOOK.search(stack)
                if hook and "WorkerThread" in stack:
                    hooks[f"{hook.group(1)}.{hook.group(2)}"] += n
    print(f"samples: {total}")
    for name, n in parts.most_common():
        print(f"{n / total * 100:5.1f}%  {name}")
    print("middleware hooks (share of all samples):")
    for name, n in hooks.most_common(12):
        print(f"{n / total * 100:5.1f}%  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
