"""``python -m vgjax.bench CASE ARGS...``: run one case in this process and print its JSON
on the last line (what :func:`vgjax.bench.run._run_child` collects)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vgjax.bench.cases import (case_cached_compile, case_ceiling, case_latency, case_scale,
                               case_train_only, case_w600)
from vgjax.bench.watch_cases import case_watch
from vgjax.bench.fastroad_cases import case_fastroad, case_fastroad_torch
from vgjax.bench.recurrent_cases import case_recurrent, case_recurrent_torch
from vgjax.bench.remedies_cases import case_remedies
from vgjax.bench.wide_cases import case_crossover, case_wide


def _child(args: list[str]) -> None:
    case = args[0]
    if case == "w600":
        res = case_w600(int(args[1]), int(args[2]), Path(args[3]))
    elif case == "train_only":
        res = case_train_only(int(args[1]), int(args[2]))
    elif case == "latency":
        res = case_latency(int(args[1]))
    elif case == "scale":
        res = case_scale(int(args[1]), int(args[2]), Path(args[3]))
    elif case == "ceiling":
        res = case_ceiling()
    elif case == "cached_compile":
        res = case_cached_compile(int(args[1]), int(args[2]), args[3:] == ["traced"])
    elif case == "wide":
        res = case_wide(tuple(int(d) for d in args[1].split(",")), int(args[2]), int(args[3]),
                        int(args[4]))
    elif case == "crossover":
        res = case_crossover(int(args[1]), int(args[2]))
    elif case == "watch":
        res = case_watch(int(args[1]), int(args[2]))
    elif case == "fastroad":
        res = case_fastroad(args[1], int(args[2]))
    elif case == "fastroad_torch":
        res = case_fastroad_torch(args[1], int(args[2]))
    elif case == "remedies":
        res = case_remedies(int(args[1]))
    elif case == "recurrent":
        res = case_recurrent(int(args[1]))
    elif case == "recurrent_torch":
        res = case_recurrent_torch(int(args[1]))
    else:
        raise SystemExit(f"unknown case {case!r}")
    print(json.dumps(res))


if __name__ == "__main__":
    _child(sys.argv[1:])
