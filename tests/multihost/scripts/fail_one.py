"""Launched once per process: process ``FAIL_PROCESS`` dies with exit code 3, the others wait in a collective.

It dies with ``os._exit`` (like a crash or an OOM kill): ``sys.exit`` would first block in JAX's distributed
shutdown barrier, waiting for processes that themselves wait for it.
"""

import os

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlens.parallel import distributed

distributed.initialize()
print("ready", flush=True)
if jax.process_index() == int(os.environ["FAIL_PROCESS"]):
  os._exit(3)
mesh = jax.make_mesh((jax.device_count(),), ("data",))
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), np.ones(jax.local_device_count()))
print(float(jax.jit(lambda a: a.sum())(x)))  # blocks: the failed process never joins
