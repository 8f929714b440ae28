"""Tools around the node: synthetic bags, the bag player, offline and live evaluation, reports, the demo.

Nothing in the node runtime (``memsam_ros.node`` and its helpers) imports this package; the tools use
the runtime's codec, synchroniser and helpers so they replay exactly what the node does.
"""
