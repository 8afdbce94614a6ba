"""Where a profiled step spends its time: the ops of a ``jax.profiler`` trace, grouped and ranked.

``summarize(trace_dir, steps)`` reads the ``*.xplane.pb`` that ``jax.profiler.trace(trace_dir)`` wrote (through
``jax.profiler.ProfileData``, no TensorBoard needed) and returns, per step, the busy time of each op and of each
op category, largest first:

- on GPU, the events of the device planes' op lines (``/device:GPU:k``, the kernels XLA launched: fusions,
  cuBLAS/cuDNN custom calls, copies, ...);
- on CPU, the events of XLA's executor threads (``tf_XLA*`` lines of ``/host:CPU``: fusions, dots, copies), summed
  over threads, so the totals are CPU time, not wall time.

Times are exclusive: an event's time minus the events nested in it on the same line (a ``while`` loop's body ops
run inside the loop's event). Categories come from the op name: ``matmul`` (dot, gemm, cuBLAS, oneDNN),
``attention`` (cuDNN fused attention), ``xnnpack fusion`` (CPU: XNNPACK fusions, dots with their elementwise
neighbours), ``fusion`` (XLA elementwise/reduction fusions), ``copy/transpose``, ``collective``, ``sort``, ``other``
(e.g. a loop's own control). The summary is what ``bench/step.py --profile`` records and ``bench/step_report.py`` tabulates.
"""

from __future__ import annotations

import collections
import glob
import os
import re

#: Host-side bookkeeping events on the CPU executor threads, not XLA work.
_NOT_OPS = re.compile(r"^(ThreadpoolListener|ThunkExecutor|SlinkyThreadPool|end: |TfrtCpu|PjRt|Execute)")
_CATEGORIES = (
    ("attention", re.compile(r"cudnn.*(fmha|attention|flash)|fmha|flash_attn|cudnn\$fmha", re.I)),
    ("matmul", re.compile(r"^(dot|gemm|cublas)|cublas|gemm|matmul|\bdot\b|dot\.|dot_general|onednn", re.I)),
    ("xnnpack fusion", re.compile(r"^ynn_fusion|^xnn", re.I)),
    ("collective", re.compile(r"all-reduce|all-gather|reduce-scatter|all-to-all|collective|nccl", re.I)),
    ("copy/transpose", re.compile(r"^(copy|transpose)|copy\.|transpose|memcpy|memset", re.I)),
    ("sort", re.compile(r"sort", re.I)),
    ("fusion", re.compile(r"fusion|loop_|input_|reduce|elementwise", re.I)),
)


def category(name: str) -> str:
  """The op category of an event name (see the module docstring)."""
  for label, pattern in _CATEGORIES:
    if pattern.search(name):
      return label
  return "other"


def _self_times(events):
  """``(name, exclusive ns)`` of one line's events: an event's time minus the events nested in it (a ``while``
  loop's body ops run inside the loop's own event), so no time is counted twice."""
  spans = sorted(((e.start_ns, e.start_ns + e.duration_ns, e.name) for e in events), key=lambda x: (x[0], -x[1]))
  self_ns = [end - start for start, end, _ in spans]
  stack = []  # indices of the open enclosing events
  for i, (start, end, _) in enumerate(spans):
    while stack and spans[stack[-1]][1] <= start:
      stack.pop()
    if stack:
      self_ns[stack[-1]] -= end - start
    stack.append(i)
  return [(name, max(ns, 0)) for (_, _, name), ns in zip(spans, self_ns)]


def _op_events(data):
  """``(name, exclusive ns)`` of every op event: the device planes if any (GPU), else XLA's CPU threads.

  A GPU plane describes the same time twice, as HLO ops (the ``XLA Ops`` line) and as the kernels they launched
  (``Stream #k`` lines): the ops are counted, the streams only when a plane has no op line."""
  planes = list(data.planes)
  device = [p for p in planes if p.name.startswith("/device:")]
  if device:
    for plane in device:
      lines = list(plane.lines)
      ops = ([line for line in lines if line.name == "XLA Ops"]
             or [line for line in lines if line.name.startswith("Stream")])
      for line in ops:
        yield from _self_times(list(line.events))
    return
  for plane in planes:
    if plane.name != "/host:CPU":
      continue
    for line in plane.lines:
      if line.name.startswith("tf_XLA"):
        yield from _self_times([e for e in line.events if not _NOT_OPS.match(e.name)])


def summarize(trace_dir: str, steps: int, top: int = 12) -> dict:
  """Per-step busy milliseconds by op (the ``top`` largest) and by category, with shares of the op total.

  Raises:
    FileNotFoundError: if ``trace_dir`` holds no ``*.xplane.pb``.
  """
  from jax.profiler import ProfileData
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  if not paths:
    raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}")
  return summarize_profile(ProfileData.from_file(paths[-1]), steps, top)


def summarize_profile(data, steps: int, top: int = 12) -> dict:
  """:func:`summarize` of a loaded ``jax.profiler.ProfileData``."""
  by_op, by_category, counts = collections.Counter(), collections.Counter(), collections.Counter()
  for name, ns in _op_events(data):
    by_op[name] += ns
    by_category[category(name)] += ns
    counts[name] += 1
  total = sum(by_op.values()) or 1
  per_step = lambda ns: ns / 1e6 / max(steps, 1)  # noqa: E731
  return {"steps": steps, "busy_ms_per_step": per_step(total),
          "categories": [{"category": c, "ms_per_step": per_step(ns), "share": ns / total}
                         for c, ns in by_category.most_common()],
          "ops": [{"op": op, "category": category(op), "ms_per_step": per_step(ns), "share": ns / total,
                   "calls_per_step": counts[op] / max(steps, 1)} for op, ns in by_op.most_common(top)]}
