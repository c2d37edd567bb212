"""An independent float64 NumPy implementation of the tutorial's training protocol.

Written from the Keras formulas, not from vgjax's code: explicit backprop of a tanh/ReLU
MLP, mean binary cross-entropy per minibatch on one logit (or the softmax cross-entropy on
C logits, when the output kernel is [w, C]) (the final partial batch averaged over its own
examples), Keras SGD momentum (v = m v - lr g; w += v) and Keras's Adam (eps added to
sqrt(v) before the bias correction of the step size: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);
w -= lr_t m / (sqrt(v) + eps)).
"""

import numpy as np

ACT = {
    "tanh": (np.tanh, lambda a: 1 - a**2),
    "relu": (lambda z: np.maximum(z, 0), lambda a: (a > 0).astype(a.dtype)),
    # derivative from the activation: s'(z) = s(z) (1 - s(z))
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda a: a * (1 - a)),
}


def forward(params, x, activation):
    """Hidden activations list and logits [N] (or [N, C]) for params = (ws, bs, wo, bo)."""
    ws, bs, wo, bo = params
    f, _ = ACT[activation]
    hs = [x]
    for w, b in zip(ws, bs):
        hs.append(f(hs[-1] @ w + b))
    return hs, hs[-1] @ wo + bo


def losses(logit, y):
    """Per-example loss [N]: binary cross-entropy of logits [N], or softmax cross-entropy
    of logits [N, C] with integer labels y; and its gradient d loss / d logit."""
    if logit.ndim == 1:
        return np.logaddexp(0, logit) - y * logit, 1 / (1 + np.exp(-logit)) - y
    top = logit.max(1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logit - top).sum(1))
    onehot = np.eye(logit.shape[1])[y.astype(int)]
    return log_z - (logit * onehot).sum(1), np.exp(logit - log_z[:, None]) - onehot


def accuracy(logit, y):
    """Share of examples classified right: logit > 0 (one logit) or the largest logit."""
    pred = (logit > 0) if logit.ndim == 1 else logit.argmax(1)
    return np.mean(pred == (y > 0.5) if logit.ndim == 1 else pred == y)


def loss_and_grads(params, x, y, activation):
    """Mean loss (:func:`losses`) over the batch and gradients in the structure of params."""
    ws, bs, wo, bo = params
    _, df = ACT[activation]
    hs, logit = forward(params, x, activation)
    per, dlogit = losses(logit, y)
    loss = np.mean(per)
    delta = dlogit / len(y)
    g_wo, g_bo = hs[-1].T @ delta, delta.sum(0)
    back = np.outer(delta, wo) if wo.ndim == 1 else delta @ wo.T
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


def histogram(values, edges):
    """Counts [K] of ``values`` on ``edges`` [K+1] as numpy.histogram counts them, with values
    beyond the outer edges clipped into the outermost buckets and NaN left out."""
    v = np.asarray(values, np.float64).ravel()
    v = v[~np.isnan(v)]
    e = np.asarray(edges, np.float64)
    return np.histogram(np.clip(v, e[0], e[-1]), bins=e)[0]


def hist_stats(values):
    """[4] min, max, sum, sum of squares of the non-NaN values."""
    v = np.asarray(values, np.float64).ravel()
    v = v[~np.isnan(v)]
    return np.array([v.min(), v.max(), v.sum(), (v**2).sum()])


def _kernels(tree):
    wo = np.asarray(tree[2])
    return list(tree[0]) + [wo[:, None] if wo.ndim == 1 else wo]


def train(params, x, y, x_test, y_test, batches, *, activation, optimizer="sgd", lr=0.01,
          momentum=0.9, hist_every=0, edges=None, test_gradients=False):
    """Train on ``batches`` (a list per epoch of index arrays) and return per-epoch records:
    train/test loss and accuracy after each epoch, mean over steps of mean |dL/dW| and of
    ||dL/dW|| per kernel, and each kernel's L1 norm at epoch end. With ``hist_every`` every
    such epoch also has ``grad_hist`` [L, K] (kernel gradients of all its steps on ``edges``),
    ``grad_hist_stats`` [L, 4], ``weight_hist`` [L, K] and ``weight_hist_stats`` [L, 4]; with
    ``test_gradients`` ``test_grad_mean_abs`` and ``test_grad_norm`` [L] of the full test-set
    gradient at epoch end."""
    n = len(params[0])
    leaves = [np.array(a, np.float64) for a in _flat(params)]
    vel = [np.zeros_like(a) for a in leaves]
    m = [np.zeros_like(a) for a in leaves]
    v = [np.zeros_like(a) for a in leaves]
    t = 0
    records = []
    for e, epoch in enumerate(batches):
        g_abs = np.zeros(n + 1)
        g_norm = np.zeros(n + 1)
        hist_now = hist_every > 0 and (e + 1) % hist_every == 0
        g_vals = [[] for _ in range(n + 1)]
        for idx in epoch:
            _, g = loss_and_grads(_unflat(leaves, n), x[idx], y[idx], activation)
            gl = _flat(g)
            kernels = list(g[0]) + [g[2]]
            if hist_now:
                for j, k in enumerate(_kernels(g)):
                    g_vals[j].append(k.ravel())
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
                    lr_t = lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
                    leaves[j] = leaves[j] - lr_t * m[j] / (np.sqrt(v[j]) + 1e-7)
        cur = _unflat(leaves, n)
        rec = {}
        for name, xs, ys in (("train", x, y), ("test", x_test, y_test)):
            _, logit = forward(cur, xs, activation)
            rec[f"{name}_loss"] = np.mean(losses(logit, ys)[0])
            rec[f"{name}_accuracy"] = accuracy(logit, ys)
        rec["grad_mean_abs"] = g_abs / len(epoch)
        rec["grad_norm"] = g_norm / len(epoch)
        rec["weight_l1"] = np.array([np.abs(k).sum() for k in list(cur[0]) + [cur[2]]])
        if hist_now:
            gv = [np.concatenate(v) for v in g_vals]
            wv = [k.ravel() for k in _kernels(cur)]
            rec["grad_hist"] = np.stack([histogram(v, edges) for v in gv])
            rec["grad_hist_stats"] = np.stack([hist_stats(v) for v in gv])
            rec["weight_hist"] = np.stack([histogram(v, edges) for v in wv])
            rec["weight_hist_stats"] = np.stack([hist_stats(v) for v in wv])
        if test_gradients:
            _, tg = loss_and_grads(cur, x_test, y_test, activation)
            tk = _kernels(tg)
            rec["test_grad_mean_abs"] = np.array([np.abs(k).mean() for k in tk])
            rec["test_grad_norm"] = np.array([np.sqrt((k**2).sum()) for k in tk])
        records.append(rec)
    return records
