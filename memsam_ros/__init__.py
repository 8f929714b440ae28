"""ROS 2 side of memsam: the segmentation node, image codec, synchroniser, bag tools.

Modules import rclpy lazily or only where needed, so the codec and synchroniser stay usable without ROS.
"""
