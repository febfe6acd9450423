"""Atari environment throughput against environments and threads: what a host can feed a learner.

`python -m bench.env_scaling [--threads=2,8,16]` prints a table and a JSON last line (frames/s, frames =
agent steps x 4) for the raw ale-py AtariVectorEnv and impala_tf's batched interface, sync and async. It needs
no TensorFlow, so it also runs on hosts where only the environments are installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from impala_tf.envs.atari import measure_env_fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=f"2,{os.cpu_count()}", help="comma-separated thread counts")
    parser.add_argument("--envs_per_thread", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--games", default="pong", help="comma-separated games (multi-task when several)")
    args = parser.parse_args()
    rows = []
    for threads in sorted({int(t) for t in args.threads.split(",")}):
        num_envs = threads * args.envs_per_thread
        for mode in ("sync", "async"):
            result = measure_env_fps(tuple(args.games.split(",")), num_envs, threads, args.seconds, mode=mode)
            rows.append(result)
            print(
                f"{num_envs:4d} envs {threads:3d} threads {mode:5s}  raw {result['raw_fps']:10,.0f}  "
                f"interface {result['interface_fps']:10,.0f}  ratio {result['ratio']:.2f}",
                flush=True,
            )
    print(
        json.dumps(
            {"machine": f"{platform.machine()} {os.cpu_count()} cores", "games": args.games, "rows": rows}
        )
    )


if __name__ == "__main__":
    main()
