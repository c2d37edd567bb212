"""``vgjax bench``: measure the engine and write ``results/benchmark.json`` and a table.

Each measurement runs in a fresh subprocess (``python -m vgjax.bench CASE ...``) so its peak
resident memory (``ru_maxrss``) and compile time belong to that case alone. The parent
collects the JSON each child prints on its last line.

Cases::

  w600      tanh U(0,1) and ReLU He x depths 1-10 x 30 seeds, width 5, 500 epochs, all
            statistics and histograms, every output written (summary, history, TensorBoard,
            figures); compile / train / write split, run-epochs per second, peak memory,
            FLOPs, and a check that a second sweep of the same shape does not recompile.
  latency   one deep-relu run (500 epochs) after compilation.
  scale N   N runs (ReLU He, depths cycling 1-10, width 5): time per run-epoch, peak memory.
  ceiling   float32 GFLOP/s of a large matmul on this machine.
  cached_compile
            a second process compiling the two W600 programs again, after the w600 case filled
            JAX's persistent compilation cache: seconds and cache hits (target <= 2 s);
            once tracing the programs again, once loading them traced (vgjax.run.programs).
  wide      a wide-net grid (W-wide: tanh Glorot, depths 4/8/16/32 x width 128 x 8 seeds,
            20 epochs, all statistics; widths 256/512 at depth 16 x 4 seeds) with the
            automatic engine: compile, training, useful GFLOP/s and the ratio to the
            batched-matmul ceiling of the same shape measured in the same process.
  crossover the tanh-breadth shape (tanh U(0,1), depths 1-10 x 30 seeds) at one width,
            fast vs wide engine: the measured crossover behind ``engine="auto"``.
  watch     8 seeds of a linen MLP on digits in one program (vgjax.watch) vs 8 sequential
            single-seed runs of the same jitted step (target >= 3x; ``watch_cases``).
  recurrent (tanh RNN, LSTM, GRU) x T 50/100/200 x 8 seeds in one program vs a PyTorch
            loop over the same runs (target >= 3x; ``recurrent_cases``, ``--only recurrent``).
  reproduce ``vgjax reproduce`` end to end (optional: ``run_benchmark(reproduce=True)``).

Every case runs with its own persistent compilation cache in a temporary directory, empty
when the benchmark starts (never the user's), so w600's compile time is a cold compile.

Modules: ``run`` (the parent: run_benchmark), ``cases`` and ``wide_cases`` (the children),
``__main__`` (a child's entry point), ``flops`` (FLOP counts), ``render`` (table, figure).
"""

from vgjax.bench.cases import W600_HIST_EVERY
from vgjax.bench.flops import padded_flops, useful_flops
from vgjax.bench.render import (SECOND_PROCESS_COMPILE_TARGET_S, TARGETS, plot_benchmark,
                                render_table, render_wide)
from vgjax.bench.run import run_benchmark
from vgjax.bench.wide_cases import CROSSOVER_WIDTHS, WIDE_CASES, WIDE_EPOCHS

__all__ = ["CROSSOVER_WIDTHS", "SECOND_PROCESS_COMPILE_TARGET_S", "TARGETS", "W600_HIST_EVERY",
           "WIDE_CASES", "WIDE_EPOCHS", "padded_flops", "plot_benchmark", "render_table",
           "render_wide", "run_benchmark", "useful_flops"]
