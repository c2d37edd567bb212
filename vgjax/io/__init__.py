"""Everything vgjax reads and writes on disk: the atomic writer and name sanitiser
(:mod:`~vgjax.io.store`), the output directory and its manifest (:mod:`~vgjax.io.outdir`),
chunk files (:mod:`~vgjax.io.chunk_store`), ``summary.json`` (:mod:`~vgjax.io.summary`),
``history.npz`` (:mod:`~vgjax.io.history`), ``tables.json`` (:mod:`~vgjax.io.tables`) and
TensorBoard event files (:mod:`~vgjax.io.tensorboard`, :mod:`~vgjax.io.tfevents`)."""
