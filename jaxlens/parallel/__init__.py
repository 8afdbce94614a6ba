"""Device mesh (data / fsdp / tensor axes), shardings, and multi-process start-up; knows no model."""

from jaxlens.parallel.distributed import initialize
from jaxlens.parallel.distributed import is_main_process
from jaxlens.parallel.mesh import BATCH_AXES
from jaxlens.parallel.mesh import MESH_AXES
from jaxlens.parallel.mesh import batch_divisor
from jaxlens.parallel.mesh import batch_sharding
from jaxlens.parallel.mesh import make_mesh
from jaxlens.parallel.mesh import replicated
from jaxlens.parallel.mesh import resolve_mesh_shape

__all__ = [
    "BATCH_AXES",
    "MESH_AXES",
    "batch_divisor",
    "batch_sharding",
    "initialize",
    "is_main_process",
    "make_mesh",
    "replicated",
    "resolve_mesh_shape",
]
