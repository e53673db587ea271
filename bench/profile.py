"""Optional py-spy recording of the measured processes (`--py-spy DIR`).

Records collapsed stacks (`--format raw`) with `--idle`, so a thread that
waits (in consume(), on a socket) shows where its wall time goes, not only
its CPU; `summarise` prints the heaviest frames per thread as text.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


@contextmanager
def recording(out_dir: Path | None, label: str, pids: dict[str, int]) -> Iterator[None]:
    spy = shutil.which("py-spy")
    if out_dir is None or spy is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = {
        name: subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--format", "raw", "--idle", "--threads", "--nonblocking",
             "--rate", "200", "-o", str(out_dir / f"{label}-{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, pid in pids.items()
    }
    try:
        yield
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for name, proc in procs.items():
            proc.wait(30)
            path = out_dir / f"{label}-{name}.txt"
            if path.exists():
                print(summarise(path))


def summarise(path: Path, top: int = 8, threads: int = 4) -> str:
    """Per thread name (pool threads merged): the share of samples in which a
    function is on the stack (inclusive), and the innermost Python lines
    (self: where the thread is, including waits inside C calls such as
    librdkafka's consume(), which py-spy shows as the calling Python line)."""
    inclusive: dict[str, Counter[str]] = {}
    leaf: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        totals[thread] += n
        seen = set()
        last = None
        for frame in frames:
            if (m := _FRAME.match(frame)) is None:
                continue
            name = f"{m['func']} ({Path(m['file']).name})"
            last = f"{m['func']} ({m['file']}:{m['line']})"
            if name not in seen:
                seen.add(name)
                inclusive.setdefault(thread, Counter())[name] += n
        if last:
            leaf.setdefault(thread, Counter())[last] += n
    out = [f"-- profile {path.name} (wall-clock samples, idle included)"]
    for thread, total in totals.most_common(threads):
        out.append(f"  thread {thread} ({total} samples)")
        out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in inclusive.get(thread, Counter()).most_common(top)]
        out.append("    self:")
        out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in leaf.get(thread, Counter()).most_common(top)]
    return "\n".join(out)
