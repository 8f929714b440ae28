"""The node's input layer: every accepted ROS message → the model's raw arrays, apart from the node itself.

* ``cdr``: headers and Image layouts read straight from serialized bytes (the executor thread touches no pixel);
* ``codec``: ``sensor_msgs/Image`` ↔ numpy (cv_bridge is not on PyPI);
* ``compressed``: ``CompressedImage`` and ``compressedDepth`` (image_transport's plugins, with OpenCV);
* ``pointcloud``: ``PointCloud2`` → x, y, z (sensor_msgs_py is not on PyPI);
* ``camera``: ``CameraInfo`` → the camera model the LiDAR projection uses;
* ``transforms``: the LiDAR → camera chain from ``/tf_static`` and ``/tf`` (tf2_ros is not on PyPI);
* ``event_codecs``: event-camera streams (``event_camera_msgs``/``event_array_msgs`` mono and evt3, ``dvs_msgs``);
* ``received``: one message waiting in the synchroniser, decoded once and only if a set uses it;
* ``converter``: :class:`~memsam_ros.inputs.converter.InputConverter`, the one conversion path of node and replay;
* ``stamps``: header stamps as exact integer nanoseconds.

Nothing here imports rclpy at module level, so bag replay and the tests use it without a ROS graph.
"""
