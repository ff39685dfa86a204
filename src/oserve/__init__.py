"""OServe: workload-aware heterogeneous LLM serving.

Pieces (one package each, imports flow downhill): ``spec`` (model, GPU, cluster) ->
``trace`` (loaders, transforms, request typing) and ``perf`` (cost model, calibration,
profiler) -> simulator / planner -> adaptation -> runtime / fleet -> ``cli``.
"""

from oserve.errors import OServeError

__version__ = "0.1.0"

__all__ = ["OServeError", "__version__"]
