"""Recurrent nets (tanh/ReLU RNNs, IRNNs, LSTMs, GRUs; single or stacked layers) as pure
functions, their long-memory tasks, gradient flow through time (in every layer) beside the
mean-field theory, and a training grid over (cell, depth, sequence length, seed) in one
compiled program.

Modules: :mod:`~vgjax.recurrent.cells` (parameters, cell steps, the masked scan over layers),
:mod:`~vgjax.recurrent.tasks` (adding problem, copy task), :mod:`~vgjax.recurrent.flow`
(log-norms of ∂L/∂h_t, gate saturation, λ₁γ, the theory's slope),
:mod:`~vgjax.recurrent.grid` (runs, the training program, its files),
:mod:`~vgjax.recurrent.outputs` (TensorBoard event files, ``vgjax show``'s table).
"""
