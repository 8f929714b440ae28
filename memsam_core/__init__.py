"""memsam core: ROS-free MemorySAM model, data, metrics and the one inference engine."""

__version__ = "0.1.0"
