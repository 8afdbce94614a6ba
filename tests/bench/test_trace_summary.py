"""bench/trace_summary.py on a synthetic GPU trace: ops counted once (not again as their stream kernels),
exclusive times under a loop, categories from the op names."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
import trace_summary  # noqa: E402

# One GPU plane, two steps: a while loop (10 µs) holding a fusion (6 µs); a cuBLAS gemm (4 µs); the same time
# again as stream kernels, which must not be counted twice.
TRACE = """
planes {
  id: 1 name: "/device:GPU:0"
  lines { id: 1 name: "XLA Ops" timestamp_ns: 0
    events { metadata_id: 1 offset_ps: 0 duration_ps: 10000000 }
    events { metadata_id: 2 offset_ps: 1000000 duration_ps: 6000000 }
    events { metadata_id: 3 offset_ps: 20000000 duration_ps: 4000000 } }
  lines { id: 2 name: "Stream #13(Compute)" timestamp_ns: 0
    events { metadata_id: 4 offset_ps: 0 duration_ps: 20000000 } }
  event_metadata { key: 1 value { id: 1 name: "while.3" } }
  event_metadata { key: 2 value { id: 2 name: "loop_exponential_fusion" } }
  event_metadata { key: 3 value { id: 3 name: "cublas-gemm.1" } }
  event_metadata { key: 4 value { id: 4 name: "some_kernel" } }
}
"""


def test_gpu_ops_are_counted_once_with_exclusive_times():
  from jax.profiler import ProfileData
  data = ProfileData.from_serialized_xspace(ProfileData.text_proto_to_serialized_xspace(TRACE))
  summary = trace_summary.summarize_profile(data, steps=2)
  assert summary["busy_ms_per_step"] == pytest.approx(0.014 / 2)  # 10 + 4 µs, not + the 20 µs stream kernel
  ops = {o["op"]: o for o in summary["ops"]}
  assert set(ops) == {"while.3", "loop_exponential_fusion", "cublas-gemm.1"}
  assert ops["while.3"]["ms_per_step"] == pytest.approx(0.004 / 2)  # its own 4 µs, not the fusion inside it
  assert ops["loop_exponential_fusion"]["category"] == "fusion" and ops["cublas-gemm.1"]["category"] == "matmul"
  assert sum(c["share"] for c in summary["categories"]) == pytest.approx(1.0)
