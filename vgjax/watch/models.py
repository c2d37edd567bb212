"""A user's Flax model as two pure functions, and its parameters named by module path.

:func:`as_model` turns a ``flax.linen.Module`` or an nnx module factory (``rngs -> module``)
into a :class:`UserModel`: ``init(key, x) -> params`` and ``apply(params, x, perturbations)
-> outputs``, both vmappable over a seed axis (an nnx module is split into a static graphdef
and its ``nnx.Param`` state, so only arrays cross the transforms). :func:`model_layout`
names every parameter leaf by its module path (``Conv_0/kernel``, ``blocks/0/attn/query/
kernel``; nnx's ``.value`` left out) and orders the paths as the forward pass first uses them,
from input to output, which is the order every per-path array of :mod:`vgjax.watch` keeps.

Gradients with respect to intermediate activations come from the models themselves:
linen's ``self.perturb(name, h)`` and nnx's ``self.perturb(name, h)`` (captured with
``nnx.capture``); their paths start with ``activations/``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATION_PREFIX = "activations/"


class UserModel(NamedTuple):
    """A Flax model as pure functions.

    - kind: ``"linen"`` or ``"nnx"``; name: the module's class name.
    - init: ``(key, x [B, ...]) -> params`` (a pytree of arrays; one seed's).
    - apply: ``(params, x [B, ...], perturbations or None) -> outputs [B] or [B, C]``.
    - perturbations: ``(params, x [B, ...]) -> zero perturbations`` (a pytree) of a batch
      shaped like ``x``, or None when the model perturbs nothing.
    """

    kind: str
    name: str
    init: Callable
    apply: Callable
    perturbations: Callable | None


class Layout(NamedTuple):
    """Where each named path lives in a pytree, in the model's input-to-output order.

    paths: path names [L]; order: for each path, its index in ``jax.tree.leaves`` of the
    tree; sizes: entries per path [L].
    """

    paths: tuple[str, ...]
    order: tuple[int, ...]
    sizes: tuple[int, ...]

    def leaves(self, tree) -> list[jax.Array]:
        """The tree's leaves in path order."""
        flat = jax.tree.leaves(tree)
        return [flat[i] for i in self.order]


def as_model(model: Any) -> UserModel:
    """``model`` (a ``flax.linen.Module``, or a callable ``rngs -> nnx.Module``) as a
    :class:`UserModel`; one-line ``ValueError`` for anything else."""
    import flax.linen as nn
    from flax import nnx

    if isinstance(model, nn.Module):
        return _linen_model(model)
    if isinstance(model, nnx.Module):
        raise ValueError(f"model: an nnx.Module instance ({type(model).__name__}); allowed: a "
                         "factory rngs -> module (e.g. lambda rngs: MLP(rngs=rngs)), so every "
                         "seed builds its own")
    if callable(model):
        return _nnx_model(model)
    raise ValueError(f"model: {type(model).__name__} is not a Flax model; allowed: a "
                     "flax.linen.Module or a factory rngs -> nnx.Module")


def _linen_model(module) -> UserModel:
    def init(key, x):
        variables = module.init(key, x)
        extra = sorted(set(variables) - {"params", "perturbations"})
        if extra:
            raise ValueError(f"model: {type(module).__name__} has variable collection(s) "
                             f"{extra}; allowed: 'params' (and 'perturbations') only")
        return variables["params"]

    def apply(params, x, perturbations):
        variables = {"params": params}
        if perturbations is not None:
            variables["perturbations"] = perturbations
        return module.apply(variables, x)

    def perturbations(params, x):
        del params
        shapes = jax.eval_shape(module.init, jax.random.key(0), x).get("perturbations")
        return None if not shapes else jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    return UserModel("linen", type(module).__name__, init, apply, perturbations)


def _nnx_model(factory: Callable) -> UserModel:
    from flax import nnx

    try:
        abstract = nnx.eval_shape(lambda: factory(nnx.Rngs(0)))
    except Exception as e:  # noqa: BLE001 - any failure of the user's factory: one line
        raise ValueError(f"model: calling the factory with nnx.Rngs failed "
                         f"({type(e).__name__}: {e}); allowed: a factory rngs -> nnx.Module"
                         ) from None
    if not isinstance(abstract, nnx.Module):
        raise ValueError(f"model: the factory returned {type(abstract).__name__}; allowed: a "
                         "factory rngs -> nnx.Module")
    graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
    if jax.tree.leaves(rest):
        kinds = sorted({type(v).__name__ for v in jax.tree.leaves(
            rest, is_leaf=lambda v: isinstance(v, nnx.Variable))})
        raise ValueError(f"model: {type(abstract).__name__} holds state besides nnx.Param "
                         f"({', '.join(kinds)}); allowed: parameters only")

    def init(key, x):
        del x
        return nnx.split(factory(nnx.Rngs(key)), nnx.Param)[1]

    def apply(params, x, perturbations):
        module = nnx.merge(graphdef, params)
        forward = lambda m, x: m(x)
        if perturbations is None:  # in a capture, so that perturb() is a plain identity
            return nnx.capture(forward)(module, x)
        return nnx.capture(forward, nnx.Perturbation, init=perturbations)(module, x)[0]

    def perturbations(params, x):
        def shapes(params, x):
            return nnx.capture(lambda m, x: m(x), nnx.Perturbation)(
                nnx.merge(graphdef, params), x)[1]
        out = jax.eval_shape(shapes, params, x)
        if not jax.tree.leaves(out):
            return None
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out)

    return UserModel("nnx", type(abstract).__name__, init, apply, perturbations)


def path_name(path: tuple) -> str:
    """``Conv_0/kernel`` from a ``tree_flatten_with_path`` key path; nnx's ``.value``
    attribute (the array inside a Variable) is not part of the name."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            if k.name != "value":
                parts.append(k.name)
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:
            parts.append(str(k))
    return "/".join(parts)


def model_layout(fn: Callable, tree, *args, prefix: str = "") -> Layout:
    """The :class:`Layout` of ``tree`` as ``fn(tree, *args)`` uses it: the paths ordered by
    the first equation of ``fn``'s jaxpr that reads each leaf (the forward pass's order, from
    input to output), ties and unused leaves in flattening order."""
    keyed, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [prefix + path_name(p) for p, _ in keyed]
    leaves = [v for _, v in keyed]
    jaxpr = jax.make_jaxpr(lambda ls, rest: fn(jax.tree.unflatten(treedef, ls), *rest))(
        leaves, args)
    position = {id(v): i for i, v in enumerate(jaxpr.jaxpr.invars[:len(leaves)])}
    first = [len(jaxpr.jaxpr.eqns)] * len(leaves)
    for e, eqn in enumerate(jaxpr.jaxpr.eqns):
        for v in eqn.invars:
            i = position.get(id(v))
            if i is not None and first[i] > e:
                first[i] = e
    order = sorted(range(len(leaves)), key=lambda i: (first[i], i))
    if len(set(names)) != len(names):
        raise ValueError(f"model: two parameters share a path name in {names}")
    return Layout(tuple(names[i] for i in order), tuple(order),
                  tuple(int(np.prod(np.shape(leaves[i]))) for i in order))
