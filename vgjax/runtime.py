"""How vgjax sets JAX up for a process: CPU devices, the compilation cache, YNNPACK fusions.

One home for the process-wide defaults that the command line and the Python API share:

* **one CPU device per core** (JAX's ``jax_num_cpu_devices``), so the run axis of a grid is
  sharded over every core. Only when the process will run on the CPU backend, and only when
  the user chose no count of their own (``JAX_NUM_CPU_DEVICES`` or the XLA flag
  ``--xla_force_host_platform_device_count``);
* **JAX's persistent compilation cache** in a per-user directory
  (``$XDG_CACHE_HOME/vgjax/jax``, default ``~/.cache/vgjax/jax``), so a second process
  running the same sweep loads its programs instead of compiling them. ``VGJAX_CACHE_DIR``
  moves it (a directory) or turns it off (``off``); a cache directory the user gave JAX
  itself (``JAX_COMPILATION_CACHE_DIR``) is kept.

``import vgjax`` calls :func:`setup` once (set ``VGJAX_SETUP=0`` before the import to keep
JAX exactly as it is); calling it again changes the cache directory. Both settings must
reach JAX before its backends start: when JAX is not imported yet they go into
``os.environ`` (which JAX reads when it is imported, and which child processes inherit),
otherwise into ``jax.config``. If JAX's backends already started with another CPU device
count, :func:`setup` warns, saying what to do.

The third default is per program, not per process: on the CPU, vgjax compiles its grid
programs with YNNPACK library fusions off (:func:`compile_lowered`), several times faster on
these tiny tensors. It is a compile option, so it applies only to CPU programs, and a jaxlib
that does not know the option (XLA aborts the process on an unknown ``XLA_FLAGS`` entry, but
answers an unknown compile option with an exception) just compiles without it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

ENV_SETUP = "VGJAX_SETUP"
ENV_CACHE = "VGJAX_CACHE_DIR"
JAX_DEVICES_ENV = "JAX_NUM_CPU_DEVICES"
JAX_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
XLA_DEVICES_FLAG = "--xla_force_host_platform_device_count"
YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# An empty list of fusion types: YNNPACK fuses nothing, XLA's own loop fusions do the work.
CPU_COMPILER_OPTIONS = {YNN_OPTION: ""}
_OFF = frozenset({"", "0", "off", "none", "no", "false"})

# What this process's setup() put into os.environ or jax.config (name -> value), so a later
# call can tell its own values from the user's and replace them.
_ours: dict[str, str] = {}
# Compile options this jaxlib answered with "No such compile option".
_unknown_options: set[str] = set()


@dataclass(frozen=True)
class Setup:
    """What :func:`setup` did. ``cpu_devices``: the CPU device count vgjax asked JAX for (None:
    left to the user or to JAX); ``cache_dir``: the persistent compilation cache directory in
    effect (None: no cache); ``notes``: one line per default that was not applied, and why."""

    cpu_devices: int | None
    cache_dir: str | None
    notes: tuple[str, ...]


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The compilation cache directory: ``VGJAX_CACHE_DIR`` (None when it says ``off``), else
    ``$XDG_CACHE_HOME/vgjax/jax`` (XDG: only an absolute ``XDG_CACHE_HOME`` counts), else
    ``~/.cache/vgjax/jax``."""
    if ENV_CACHE in environ:
        value = environ[ENV_CACHE].strip()
        return None if value.lower() in _OFF else Path(value).expanduser()
    xdg = environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "vgjax" / "jax"


def accelerator_plugins() -> list[str]:
    """Installed JAX plugins for a GPU or TPU (what JAX itself discovers at start), by name.

    Read from package metadata and import specs: nothing is imported or started.
    """
    found = [name for name in ("libtpu", "libtpu_nightly")
             if importlib.util.find_spec(name) is not None]
    found += [ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")]
    spec = importlib.util.find_spec("jax_plugins")
    if spec is not None and spec.submodule_search_locations:
        import pkgutil
        found += [m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)]
    return sorted(set(found))


def expects_cpu(platforms: str | None, plugins: list[str]) -> bool:
    """Whether JAX's default backend will be the CPU: the first of ``platforms`` (JAX_PLATFORMS,
    e.g. ``"cpu"`` or ``"cuda,cpu"``) when given, else whether no accelerator plugin is
    installed. (JAX can tell for sure only by starting its backends, which must come after.)"""
    first = (platforms or "").split(",")[0].strip().lower()
    return first == "cpu" if first else not plugins


def user_cpu_devices(environ: Mapping[str, str], jax_value: int | None = None) -> str | None:
    """The CPU device count the user chose, as they wrote it, or None: ``JAX_NUM_CPU_DEVICES``,
    ``jax.config.jax_num_cpu_devices`` (``jax_value``, -1 when unset) or the XLA flag."""
    ours = {_ours.get(JAX_DEVICES_ENV), _ours.get("jax_num_cpu_devices")}
    env = environ.get(JAX_DEVICES_ENV)
    if env is not None and env not in ours:
        return f"{JAX_DEVICES_ENV}={env}"
    if jax_value is not None and jax_value >= 0 and str(jax_value) not in ours:
        return f"jax_num_cpu_devices={jax_value}"
    for flag in environ.get("XLA_FLAGS", "").split():
        if flag.startswith(XLA_DEVICES_FLAG):
            return flag
    return None


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge
        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # a JAX without it: assume the worst
        return True


def setup(*, cache_dir: str | os.PathLike[str] | None = "auto") -> Setup:
    """Apply vgjax's process-wide JAX defaults; call it before any JAX operation runs.

    ``import vgjax`` already calls it (unless ``VGJAX_SETUP=0``); call it yourself to move or
    turn off the compilation cache: ``cache_dir`` is a directory, None (off) or ``"auto"``
    (:func:`default_cache_dir`). Warns when JAX's backends already started with another CPU
    device count (restart the process or kernel and import vgjax before using JAX).
    """
    notes: list[str] = []
    devices = _setup_devices(notes)
    cache = default_cache_dir() if isinstance(cache_dir, str) and cache_dir == "auto" else (
        None if cache_dir is None else Path(cache_dir).expanduser())
    cache_in_effect = _setup_cache(cache, notes)
    return Setup(cpu_devices=devices, cache_dir=cache_in_effect, notes=tuple(notes))


def _setup_devices(notes: list[str]) -> int | None:
    jax = sys.modules.get("jax")
    platforms = (jax.config.jax_platforms if jax is not None else None) or \
        os.environ.get("JAX_PLATFORMS")
    plugins = [] if platforms else accelerator_plugins()
    if not expects_cpu(platforms, plugins):
        notes.append(f"CPU devices: left alone, the backend is not the CPU "
                     f"(JAX_PLATFORMS={platforms!r}, plugins {plugins})")
        return None
    chosen = user_cpu_devices(os.environ, jax.config.jax_num_cpu_devices if jax else None)
    if chosen is not None:
        notes.append(f"CPU devices: the user's {chosen}")
        return None
    want = max(1, os.cpu_count() or 1)
    if jax is None:  # JAX reads the variable when it is imported
        os.environ[JAX_DEVICES_ENV] = _ours[JAX_DEVICES_ENV] = str(want)
    elif not _backends_started():
        jax.config.update("jax_num_cpu_devices", want)
        _ours["jax_num_cpu_devices"] = str(want)
    elif jax.default_backend() == "cpu" and jax.local_device_count() != want:
        warnings.warn(
            f"vgjax: JAX started before vgjax set it up and uses {jax.local_device_count()} "
            f"CPU device(s), not one per core ({want}): sweeps use only part of this machine. "
            "Restart the process (or the notebook's kernel) and import vgjax before running "
            "any JAX operation, or set JAX_NUM_CPU_DEVICES yourself.", stacklevel=3)
        notes.append("CPU devices: JAX had already started")
        return None
    return want


def _setup_cache(cache: Path | None, notes: list[str]) -> str | None:
    jax = sys.modules.get("jax")
    current = jax.config.jax_compilation_cache_dir if jax is not None else \
        os.environ.get(JAX_CACHE_ENV)
    if current and _ours.get(JAX_CACHE_ENV) != current:
        notes.append(f"compilation cache: the user's {current}")
        return current
    target = None if cache is None else str(cache)
    if target == current:
        return target
    if jax is None:
        if target is None:
            os.environ.pop(JAX_CACHE_ENV, None)
            _ours.pop(JAX_CACHE_ENV, None)
        else:
            os.environ[JAX_CACHE_ENV] = _ours[JAX_CACHE_ENV] = target
        return target
    jax.config.update("jax_compilation_cache_dir", target)
    if target is None:
        _ours.pop(JAX_CACHE_ENV, None)
    else:
        _ours[JAX_CACHE_ENV] = target
    # JAX decides once per process, at its first compilation, whether to use the cache:
    # make it decide again with the new directory.
    from jax.experimental.compilation_cache import compilation_cache
    compilation_cache.reset_cache()
    return target


def cpu_compiler_options(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Compile options for a vgjax program on the CPU: YNNPACK fusions off, unless the user's
    ``XLA_FLAGS`` chose a setting or this jaxlib does not know the option."""
    user = {f.split("=")[0].lstrip("-") for f in environ.get("XLA_FLAGS", "").split()}
    return {k: v for k, v in CPU_COMPILER_OPTIONS.items()
            if k not in user and k not in _unknown_options}


def compile_lowered(lowered, platform: str):
    """``lowered.compile()`` with :func:`cpu_compiler_options` when ``platform`` is ``"cpu"``
    (nothing CPU-specific elsewhere). An option this jaxlib does not know is dropped (it
    raises before anything is compiled) and not tried again in this process."""
    options = cpu_compiler_options() if platform == "cpu" else {}
    while options:
        try:
            return lowered.compile(compiler_options=options)
        except Exception as err:  # jax.errors.JaxRuntimeError: INVALID_ARGUMENT
            unknown = [k for k in options if f"No such compile option: '{k}'" in str(err)]
            if not unknown:
                raise
            _unknown_options.update(unknown)
            options = {k: v for k, v in options.items() if k not in unknown}
    return lowered.compile()


def auto_setup() -> Setup | None:
    """What ``import vgjax`` runs: :func:`setup`, unless ``VGJAX_SETUP`` is ``0``."""
    if os.environ.get(ENV_SETUP, "1").strip().lower() in _OFF - {""}:
        return None
    return setup()
