"""Profile the workload bot under one configuration with py-spy (where the time goes).

    python -m bench.profile --config otelbot --updates 4000 --out /tmp/otelbot.txt

Writes py-spy's collapsed stacks and prints the functions with the most samples
(inclusive and own), so a before/after of an optimisation is one command.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import e2e
from bench.procs import Child, FakeApi, Receiver, instrument_command


def summarize(collapsed: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    out = [f"{total} samples", "", "own:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="otelbot")
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/otelbot-profile.txt"))
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)
    config = next(c for c in e2e.CONFIGS if c.name == args.config)
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    receiver = Receiver()
    api = FakeApi(args.updates)
    cmd = [sys.executable, "-m", "bench.workload_bot"]
    if config.instrumented:
        cmd = [instrument_command(), *cmd]
    bot = Child(cmd, e2e.bot_env(config, api, receiver, 1.0))
    try:
        bot.wait_line("polling", 60)
        time.sleep(1.0)
        subprocess.run([pyspy, "record", "--pid", str(bot.proc.pid), "--format", "raw",
                        "--duration", str(int(args.seconds)), "--rate", "250",
                        "--threads", "-o", str(args.out)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        bot.stop()
        api.stop()
        receiver.close()
    print(summarize(args.out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
