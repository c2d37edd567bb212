"""Compatibility names for code written before the storage split; new code imports from the
modules that own each job:

* :mod:`vgjax.store`   — the atomic writer, the name sanitiser, npz files, strict JSON;
* :mod:`vgjax.outdir`  — output-directory file names, claims/resume, the chunk store;
* :mod:`vgjax.summary` — ``summary.json`` (build, typed schema, write, load);
* :mod:`vgjax.history` — ``history.npz`` (write, stream from chunks, ``load_result``);
* :mod:`vgjax.result`  — final values, "learns", seed statistics, grouping.

Nothing is defined here.
"""

import os  # noqa: F401  (tests patch io.os, which is the os module every writer uses)

from vgjax.history import (RUN_ARRAYS, load_result, write_history,  # noqa: F401
                           write_history_from_chunks)
from vgjax.outdir import (CHUNKS_DIR, HISTORY_NAME, MANIFEST_NAME, OWNED_NAMES,  # noqa: F401
                          PLOTS_DIR, SUMMARY_NAME, TENSORBOARD_DIR, ChunkStore, make_manifest,
                          prepare_out_dir)
from vgjax.result import SHARED_ARRAYS, final_values  # noqa: F401
from vgjax.store import (atomic_save_npz, atomic_write_bytes, atomic_write_text,  # noqa: F401
                         safe_join, sanitize_name)
from vgjax.summary import (SUMMARY_FORMAT, SUMMARY_VERSION, build_summary,  # noqa: F401
                           load_summary, package_versions, write_summary)
