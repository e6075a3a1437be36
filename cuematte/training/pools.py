"""How the data rendering pools (training cache, eval splits, parallax cache) start their workers."""

from __future__ import annotations

# Not "fork": a child forked from a process whose OpenCV, ONNX Runtime or torch thread pools have run inherits
# their locks, possibly held, and can wait on one forever (seen in the test suite, intermittently: two workers
# asleep on a futex after the engine's full-size OpenCV work had run in the parent). "forkserver" forks each
# worker from a clean single-threaded server process instead; jobs travel pickled.
POOL_START = "forkserver"
