"""Launched once per process: a cross-process sum over a global array built from each process's rows."""

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlens.parallel import distributed

distributed.initialize()
mesh = jax.make_mesh((jax.device_count(),), ("data",))
local = np.arange(jax.local_device_count(), dtype=np.float32) + jax.local_device_count() * jax.process_index()
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)
print(f"processes={jax.process_count()} devices={jax.device_count()} sum={float(jax.jit(lambda a: a.sum())(x))}")
