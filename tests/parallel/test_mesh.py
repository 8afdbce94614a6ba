"""Mesh shapes and the errors for meshes that do not match the devices."""

import jax
import pytest

from jaxlens.parallel import distributed
from jaxlens.parallel import mesh as pmesh


def test_resolve_fills_one_free_axis():
  assert pmesh.resolve_mesh_shape(-1, 1, 4, 8) == (2, 1, 4)
  assert pmesh.resolve_mesh_shape(2, -1, 2, 8) == (2, 2, 2)
  assert pmesh.resolve_mesh_shape(8, 1, 1, 8) == (8, 1, 1)


@pytest.mark.parametrize("sizes, message", [
    ((2, 2, 4), r"data×fsdp×tensor = 2×2×4 = 16 devices, but 8 are available"),
    ((-1, -1, 2), r"at most one mesh axis may be -1"),
    ((0, 1, 8), r"must be positive or -1"),
    ((-1, 3, 1), r"the fixed axes \(3 devices\) do not divide the 8 devices"),
])
def test_bad_mesh_is_rejected_with_the_sizes(sizes, message):
  with pytest.raises(ValueError, match=message):
    pmesh.resolve_mesh_shape(*sizes, 8)


def test_make_mesh_axes_and_batch_sharding():
  mesh = pmesh.make_mesh(2, 2, 2)
  assert mesh.axis_names == pmesh.MESH_AXES and dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert pmesh.batch_divisor(mesh) == 4
  x = jax.device_put(jax.numpy.zeros((8, 3)), pmesh.batch_sharding(mesh))
  assert x.addressable_shards[0].data.shape == (2, 3)
  with pytest.raises(ValueError, match="but 8 are available"):
    pmesh.make_mesh(3, 1, 1)


def test_distributed_initialize_is_single_process_by_default(monkeypatch):
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize("auto") is False
  assert distributed.initialize("off", "127.0.0.1:1", 2, 0) is False
  with pytest.raises(ValueError, match="parallel.distributed must be one of"):
    distributed.initialize("sometimes")
  with pytest.raises(ValueError, match=r"process_id 3 is outside \[0, 2\)"):
    distributed.initialize("auto", "127.0.0.1:1", 2, 3)
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
  with pytest.raises(ValueError, match="JAXLENS_NUM_PROCESSES must be an integer"):
    distributed.initialize("auto")
  assert distributed.is_main_process()
