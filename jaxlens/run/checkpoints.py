r"""The on-disk format of a training run's checkpoints (orbax), shared by training and evaluation.

Format only: no training logic, no model code. A run folder ``<run>/`` holds ``checkpoints/<step>/`` with the
items below; orbax writes each step to a temporary folder and renames it when complete (atomic: a crash
mid-save never leaves a half-written ``<step>/``), and keeps the last N steps.

=============  =======================================================================================
item           contents
=============  =======================================================================================
``params``     trainable parameters: ``{"student": <nnx pure dict>, ["projection": [D_T, D_S]]}`` (fp32)
``opt_state``  the optax optimizer state (training only)
``train``      ``{"step": int32, "rng": uint32 key data}``
``data``       the data iterator's JSON state (epoch, position, …)
``config``     the resolved training config (JSON, ``jaxlens.run.config.to_dict``; read back typed)
``run``        JSON facts evaluation needs without the training code: the teacher's and student's
               ``ModelConfig`` dicts, the lens ``layer_pairs`` ``[[t, s], …]``, the step, jaxlens version
``digest``     a content digest of every other item (below), written in the same atomic save
=============  =======================================================================================

Evaluation reads a run with :func:`read_run` (the typed :class:`~jaxlens.run.config.TrainConfig` + run facts) and
:func:`read_params` (student weights).

**Verification.** Orbax does not checksum the data, so a save records, per array leaf, the digest

.. math::

   d(x) = \Big(\sum_i u_i,\; \sum_i (2i + 1)\,u_i\Big) \bmod 2^{32}

of its bit pattern ``u`` (as unsigned 32-bit words, ``i`` the flat index; computed on the devices, whatever
the sharding), and the sha256 of each JSON item. Every restore recomputes them and raises
:class:`CheckpointError` naming the first leaf that differs (a changed word always changes the weighted sum:
its weight is odd), and refuses parameters that are not finite. :func:`save` refuses a state with a non-finite
value (:class:`NonFiniteError`): a NaN state is never written. A checkpoint without a ``digest`` item (written
before digests existed) is checked for finiteness only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxlens.run import config as run_config

CHECKPOINT_DIR = "checkpoints"
STATE_ITEMS = ("params", "opt_state", "train")
JSON_ITEMS = ("data", "config", "run")
DIGEST_ITEM = "digest"


class CheckpointError(RuntimeError):
  """A checkpoint that is missing, unreadable (e.g. truncated), corrupt (fails its digest) or incompatible with
  the requested model."""


class NonFiniteError(CheckpointError):
  """A state or checkpoint holding NaN or ±inf values (named by leaf path)."""


@jax.jit
def _leaf_digests(leaves: list) -> tuple[jax.Array, jax.Array]:
  """Per leaf: ``[sum u, sum (2i+1) u] mod 2**32`` of its bits as uint32 words, and whether it is finite."""
  digests, finite = [], []
  for x in leaves:
    bits = x.dtype.itemsize * 8
    if x.dtype == jnp.bool_:
      words = x.astype(jnp.uint32)
    else:
      words = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{bits}")).astype(jnp.uint32)
    weights = 2 * jnp.arange(x.size, dtype=jnp.uint32).reshape(x.shape) + 1
    digests.append(jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * weights, dtype=jnp.uint32)]))
    finite.append(jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True))
  return jnp.stack(digests), jnp.stack(finite)


def array_digests(tree) -> tuple[dict[str, str], list[str]]:
  """``({leaf path: 16 hex digits}, [paths of leaves holding NaN or ±inf])`` of a pytree of arrays.

  Computed where the arrays live (one small device-to-host transfer); see the module docstring for the digest.
  """
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  if not flat:
    return {}, []
  digests, finite = (np.asarray(a) for a in _leaf_digests([jnp.asarray(x) for _, x in flat]))
  paths = [_path_name(p) for p, _ in flat]
  return ({p: f"{int(d[0]):08x}{int(d[1]):08x}" for p, d in zip(paths, digests)},
          [p for p, ok in zip(paths, finite) if not ok])


def _path_name(path) -> str:
  """``['student']['blocks']['0']…`` — dict keys as strings, as orbax restores them (nnx uses int block keys)."""
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(f"[{str(k.key)!r}]")
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(f"[{k.idx}]")
    elif isinstance(k, jax.tree_util.GetAttrKey):
      parts.append(f".{k.name}")
    else:
      parts.append(str(k))
  return "".join(parts)


def json_digest(tree) -> str:
  """sha256 of the canonical JSON of ``tree`` (sorted keys; tuples as lists)."""
  return hashlib.sha256(json.dumps(tree, sort_keys=True).encode("utf-8")).hexdigest()


def _nonfinite_message(what: str, paths: list[str]) -> str:
  shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
  return f"{what} holds NaN or inf in {len(paths)} array(s): {shown}"


def checkpoint_dir(run_dir: str) -> str:
  """``<run_dir>/checkpoints`` as an absolute path (orbax requires absolute paths)."""
  return os.path.join(os.path.abspath(run_dir), CHECKPOINT_DIR)


def open_manager(run_dir: str, *, max_to_keep: int | None = None, read_only: bool = False) -> ocp.CheckpointManager:
  """An orbax :class:`~orbax.checkpoint.CheckpointManager` over ``<run_dir>/checkpoints``.

  Args:
    run_dir: the run folder.
    max_to_keep: keep only this many most recent steps (None: all).
    read_only: never create, write or delete anything (evaluation).
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
                                         cleanup_tmp_directories=not read_only)
  handlers = {**{k: ocp.StandardCheckpointHandler() for k in STATE_ITEMS},
              **{k: ocp.JsonCheckpointHandler() for k in (*JSON_ITEMS, DIGEST_ITEM)}}
  return ocp.CheckpointManager(checkpoint_dir(run_dir), options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, *, params, opt_state, train: Mapping[str, Any],
         data: Mapping[str, Any], config: Mapping[str, Any], run: Mapping[str, Any], force: bool = False) -> bool:
  """Save one step with its ``digest`` item (asynchronously; :meth:`~orbax.checkpoint.CheckpointManager.
  wait_until_finished` to block).

  Returns:
    whether a save was started (orbax skips a step that already exists).

  Raises:
    NonFiniteError: if ``params`` or ``opt_state`` hold a NaN or ±inf (nothing is written).
  """
  if step in manager.all_steps():
    return False
  arrays = {"params": params, "opt_state": opt_state, "train": dict(train)}
  jsons = {k: json.loads(json.dumps(dict(v))) for k, v in (("data", data), ("config", config), ("run", run))}
  digest: dict[str, Any] = {"format": 1}
  for name, tree in arrays.items():
    digest[name], nonfinite = array_digests(tree)
    if nonfinite:
      raise NonFiniteError(_nonfinite_message(f"the state of step {step}", [f"{name}{p}" for p in nonfinite])
                           + "; not saved")
  digest.update({name: json_digest(tree) for name, tree in jsons.items()})
  args = {**{k: ocp.args.StandardSave(v) for k, v in arrays.items()},
          **{k: ocp.args.JsonSave(v) for k, v in jsons.items()}, DIGEST_ITEM: ocp.args.JsonSave(digest)}
  return manager.save(step, args=ocp.args.Composite(**args), force=force)


def _has_digest(manager: ocp.CheckpointManager, step: int) -> bool:
  return os.path.isdir(os.path.join(_step_path(manager, step), DIGEST_ITEM))


def verify(path: str, digest: Mapping[str, Any] | None, restored: Mapping[str, Any]) -> None:
  """Check restored items against the checkpoint's ``digest`` item (when it has one) and ``params`` for finiteness.

  Args:
    path: the step folder (for messages).
    digest: the stored ``digest`` item, or None for a checkpoint written before digests.
    restored: item name → restored value (arrays or JSON dicts); items missing here are not checked.

  Raises:
    CheckpointError: naming the first item or leaf whose digest differs.
    NonFiniteError: if the restored parameters hold NaN or ±inf.
  """
  for name, value in restored.items():
    if name in STATE_ITEMS:
      got, nonfinite = array_digests(value)
      if digest is not None:
        want = digest.get(name, {})
        if set(got) != set(want):
          raise CheckpointError(f"checkpoint {path} fails verification: the {name!r} arrays differ from the "
                                "ones recorded at save")
        bad = [p for p in got if got[p] != want[p]]
        if bad:
          raise CheckpointError(f"checkpoint {path} fails verification: {name}{bad[0]} does not match the digest "
                                f"recorded at save ({len(bad)} array(s) differ): its files are corrupt")
      if name == "params" and nonfinite:
        raise NonFiniteError(_nonfinite_message(f"checkpoint {path}", [f"params{p}" for p in nonfinite]))
    elif digest is not None and name in JSON_ITEMS and json_digest(value) != digest.get(name):
      raise CheckpointError(f"checkpoint {path} fails verification: its {name!r} item does not match the digest "
                            "recorded at save: its files are corrupt")


def _first_line(e: Exception) -> str:
  """``Type: first line of the message`` (storage errors carry multi-line specs)."""
  lines = str(e).strip().splitlines()
  return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


def _step_path(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


def _shape_mismatches(stored, target) -> list[str]:
  """Shape differences first, then leaves missing on either side (``path: what``)."""
  stored_leaves = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(stored)[0]}
  target_leaves = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}
  out = []
  for k in sorted(stored_leaves.keys() & target_leaves.keys()):
    s, t = tuple(getattr(stored_leaves[k], "shape", ())), tuple(getattr(target_leaves[k], "shape", ()))
    if s != t:
      out.append(f"{k}: shape {s} in the checkpoint, {t} in the model")
  out += [f"{k}: missing in the checkpoint" for k in sorted(target_leaves) if k not in stored_leaves]
  out += [f"{k}: in the checkpoint but not in the model" for k in sorted(stored_leaves) if k not in target_leaves]
  return out


def _normalise_keys(tree):
  """Orbax stores dict keys as strings: turn integer-like keys of nested dicts back into str for comparison."""
  if isinstance(tree, Mapping):
    return {str(k): _normalise_keys(v) for k, v in tree.items()}
  return tree


def check_compatible(manager: ocp.CheckpointManager, step: int, item: str, target) -> None:
  """Raise :class:`CheckpointError` if item ``item`` of ``step`` differs in tree or shapes from ``target``."""
  path = _step_path(manager, step)
  try:
    stored = manager.item_metadata(step)[item]
  except Exception as e:  # noqa: BLE001 - orbax raises many types for damaged metadata
    raise CheckpointError(f"checkpoint {path} is unreadable ({_first_line(e)})") from e
  if stored is None:
    raise CheckpointError(f"checkpoint {path} has no {item!r} item")
  problems = _shape_mismatches(_normalise_keys(stored.tree if hasattr(stored, "tree") else stored),
                               _normalise_keys(target))
  if problems:
    shown = "; ".join(problems[:5]) + (f"; … {len(problems) - 5} more" if len(problems) > 5 else "")
    raise CheckpointError(f"checkpoint {path} is incompatible with this run's {item}: {shown}")


def _on_this_process(target):
  """``target`` with every leaf that has no sharding placed on this process's first device.

  Without a sharding, orbax would restore onto the devices that *saved* the checkpoint, which a process with
  another device set (another process count, fewer devices) does not have.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: x if isinstance(getattr(x, "sharding", None), jax.sharding.Sharding)
                      else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), target)


def restore(manager: ocp.CheckpointManager, step: int, targets: Mapping[str, Any]) -> dict[str, Any]:
  """Restore ``step``: the array items named in ``targets`` (abstract pytrees with shardings) plus every JSON item.

  Args:
    manager: from :func:`open_manager`.
    step: an existing step.
    targets: item name (``params``, ``opt_state``, ``train``) → abstract target (``jax.ShapeDtypeStruct`` leaves
      with ``sharding``); the result has the target's structure, dtypes and shardings (leaves without a
      sharding land on this process's first device). Any saving topology restores into any target one.

  Returns:
    item name → restored value (arrays for the targets, dicts for ``data``, ``config``, ``run``).

  Raises:
    CheckpointError: naming the step folder, when it is incompatible (tree or shapes) or unreadable.
  """
  if "params" in targets:  # a model mismatch shows here first, with readable parameter paths
    check_compatible(manager, step, "params", targets["params"])
  args = {k: ocp.args.StandardRestore(_on_this_process(v)) for k, v in targets.items()}
  args.update({k: ocp.args.JsonRestore() for k in JSON_ITEMS})
  with_digest = _has_digest(manager, step)
  if with_digest:
    args[DIGEST_ITEM] = ocp.args.JsonRestore()
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**args))
  except Exception as e:  # noqa: BLE001 - tensorstore / orbax raise many types for damaged files
    raise CheckpointError(f"checkpoint {_step_path(manager, step)} is unreadable or corrupt "
                          f"({_first_line(e)})") from e
  out = {k: restored[k] for k in args if k != DIGEST_ITEM}
  verify(_step_path(manager, step), restored[DIGEST_ITEM] if with_digest else None, out)
  return out


class RunInfo(NamedTuple):
  """What a run folder's checkpoint says about itself: ``step``, resolved ``config`` and ``run`` facts."""

  path: str
  step: int
  config: run_config.TrainConfig
  run: dict[str, Any]


def _read_manager(run_dir: str, step: int | None) -> tuple[ocp.CheckpointManager, int]:
  if not os.path.isdir(checkpoint_dir(run_dir)):
    raise CheckpointError(f"no checkpoints in {run_dir!r} (expected {checkpoint_dir(run_dir)}/<step>/)")
  manager = open_manager(run_dir, read_only=True)
  steps = manager.all_steps()
  if not steps:
    raise CheckpointError(f"no complete checkpoint in {checkpoint_dir(run_dir)}")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise CheckpointError(f"no checkpoint for step {step} in {checkpoint_dir(run_dir)}; steps: {sorted(steps)}")
  return manager, step


def read_run(run_dir: str, step: int | None = None) -> RunInfo:
  """The resolved config and run facts of ``run_dir``'s latest (or given) checkpoint; no arrays are read.

  The stored config is read with :func:`jaxlens.run.config.from_stored`, the parser of every config (keys added
  since the run was written take the value that reproduces it), so a run written by another schema fails here,
  naming the key, not later in evaluation.

  Raises:
    CheckpointError: if the folder has no checkpoint, the JSON items are unreadable or fail their digest, or the
      stored config is not a valid :class:`~jaxlens.run.config.TrainConfig` of this version.
  """
  manager, step = _read_manager(run_dir, step)
  path = _step_path(manager, step)
  args = {"config": ocp.args.JsonRestore(), "run": ocp.args.JsonRestore()}
  with_digest = _has_digest(manager, step)
  if with_digest:
    args[DIGEST_ITEM] = ocp.args.JsonRestore()
  try:
    got = manager.restore(step, args=ocp.args.Composite(**args))
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"checkpoint {path} is unreadable ({_first_line(e)})") from e
  verify(path, got[DIGEST_ITEM] if with_digest else None, {"config": got["config"], "run": got["run"]})
  try:
    config = run_config.from_stored(got["config"])
  except run_config.ConfigError as e:
    raise CheckpointError(f"checkpoint {path}: {e}") from None
  return RunInfo(path, step, config, dict(got["run"]))


def read_params(run_dir: str, target=None, step: int | None = None):
  """The trainable parameters ``{"student": …, ["projection": …]}`` of ``run_dir``'s latest (or given) checkpoint.

  Args:
    run_dir: the run folder.
    target: optional abstract pytree (e.g. ``{"student": nnx.to_pure_dict(nnx.state(model, nnx.Param))}`` of
      ``jax.ShapeDtypeStruct``) to restore into, with shapes checked first; None restores host numpy arrays
      with string dict keys (``"0"`` for block 0).
    step: a specific step (default: the latest).

  Raises:
    CheckpointError: if there is no checkpoint, it is unreadable, fails verification (corrupt files,
      :class:`NonFiniteError` for NaN / inf parameters), or does not match ``target``.
  """
  manager, step = _read_manager(run_dir, step)
  if target is not None:
    return restore(manager, step, {"params": target})["params"]
  try:
    stored = manager.item_metadata(step)["params"]
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"checkpoint {_step_path(manager, step)} is unreadable ({_first_line(e)})") from e
  shapes = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), stored)
  return jax.tree.map(np.asarray, restore(manager, step, {"params": shapes})["params"])
