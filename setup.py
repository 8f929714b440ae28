"""ament_python package for memsam: ``pip install -e .`` off-ROS, ``colcon build`` on a ROS 2 install."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "memsam_ros"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(
        include=["memsam_core", "memsam_core.*", "memsam_ros", "memsam_ros.*", "memsam_training", "memsam_training.*"]
    ),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE_NAME]),
        ("share/" + PACKAGE_NAME, ["package.xml"]),
        ("share/" + PACKAGE_NAME + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE_NAME + "/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="memsam developers",
    maintainer_email="dev@memsam.invalid",
    description="Multi-modal semantic segmentation with SAM 2 memory (MemorySAM) as a ROS 2 node.",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "segment_node = memsam_ros.node:main",
            "memsam-node = memsam_ros.node:main",
            "memsam-make-bag = memsam_ros.tools.bag_tools:make_bag_main",
            "memsam-play-bag = memsam_ros.tools.player:main",
            "memsam-eval-bag = memsam_ros.tools.evaluate:main",
            "memsam-demo = memsam_ros.tools.demo:main",
            "memsam-train = memsam_training.train:main",
        ],
    },
)
