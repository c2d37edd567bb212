"""An independent float64 NumPy implementation of the tutorial's training protocol.

Written from the Keras formulas, not from vgjax's code: explicit backprop of a tanh/ReLU
MLP, mean binary cross-entropy per minibatch (the final partial batch averaged over its own
examples), Keras SGD momentum (v = m v - lr g; w += v) and Adam as optax defines it.
"""

import numpy as np

ACT = {
    "tanh": (np.tanh, lambda a: 1 - a**2),
    "relu": (lambda z: np.maximum(z, 0), lambda a: (a > 0).astype(a.dtype)),
}


def forward(params, x, activation):
    """Hidden activations list and logits [N] for params = (ws, bs, wo, bo)."""
    ws, bs, wo, bo = params
    f, _ = ACT[activation]
    hs = [x]
    for w, b in zip(ws, bs):
        hs.append(f(hs[-1] @ w + b))
    return hs, hs[-1] @ wo + bo


def loss_and_grads(params, x, y, activation):
    """Mean BCE over the batch and gradients in the same structure as params."""
    ws, bs, wo, bo = params
    _, df = ACT[activation]
    hs, logit = forward(params, x, activation)
    p = 1 / (1 + np.exp(-logit))
    loss = np.mean(np.logaddexp(0, logit) - y * logit)
    delta = (p - y) / len(y)
    g_wo, g_bo = hs[-1].T @ delta, delta.sum()
    back = np.outer(delta, wo)
    g_ws, g_bs = [None] * len(ws), [None] * len(ws)
    for i in reversed(range(len(ws))):
        dz = back * df(hs[i + 1])
        g_ws[i], g_bs[i] = hs[i].T @ dz, dz.sum(0)
        back = dz @ ws[i].T
    return loss, (g_ws, g_bs, g_wo, g_bo)


def _flat(tree):
    ws, bs, wo, bo = tree
    return list(ws) + list(bs) + [wo, np.asarray(bo, np.float64)]


def _unflat(leaves, n):
    return leaves[:n], leaves[n:2 * n], leaves[2 * n], leaves[2 * n + 1]


def train(params, x, y, x_test, y_test, batches, *, activation, optimizer="sgd", lr=0.01,
          momentum=0.9):
    """Train on ``batches`` (a list per epoch of index arrays) and return per-epoch records:
    train/test loss and accuracy after each epoch, mean over steps of mean |dL/dW| and of
    ||dL/dW|| per kernel, and each kernel's L1 norm at epoch end."""
    n = len(params[0])
    leaves = [np.array(a, np.float64) for a in _flat(params)]
    vel = [np.zeros_like(a) for a in leaves]
    m = [np.zeros_like(a) for a in leaves]
    v = [np.zeros_like(a) for a in leaves]
    t = 0
    records = []
    for epoch in batches:
        g_abs = np.zeros(n + 1)
        g_norm = np.zeros(n + 1)
        for idx in epoch:
            _, g = loss_and_grads(_unflat(leaves, n), x[idx], y[idx], activation)
            gl = _flat(g)
            kernels = list(g[0]) + [g[2]]
            g_abs += [np.abs(k).mean() for k in kernels]
            g_norm += [np.sqrt((k**2).sum()) for k in kernels]
            t += 1
            for j, gj in enumerate(gl):
                if optimizer == "sgd":
                    vel[j] = momentum * vel[j] - lr * gj
                    leaves[j] = leaves[j] + vel[j]
                else:
                    m[j] = 0.9 * m[j] + 0.1 * gj
                    v[j] = 0.999 * v[j] + 0.001 * gj**2
                    mh, vh = m[j] / (1 - 0.9**t), v[j] / (1 - 0.999**t)
                    leaves[j] = leaves[j] - lr * mh / (np.sqrt(vh) + 1e-7)
        cur = _unflat(leaves, n)
        rec = {}
        for name, xs, ys in (("train", x, y), ("test", x_test, y_test)):
            _, logit = forward(cur, xs, activation)
            rec[f"{name}_loss"] = np.mean(np.logaddexp(0, logit) - ys * logit)
            rec[f"{name}_accuracy"] = np.mean((logit > 0) == (ys > 0.5))
        rec["grad_mean_abs"] = g_abs / len(epoch)
        rec["grad_norm"] = g_norm / len(epoch)
        rec["weight_l1"] = np.array([np.abs(k).sum() for k in list(cur[0]) + [cur[2]]])
        records.append(rec)
    return records
