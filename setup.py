"""memsam for pip (``pip install -e .`` off-ROS). On a ROS 2 install ``colcon build`` uses CMakeLists.txt instead;
the console scripts are in setup.cfg, which both read."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "memsam_ros"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    # training/ is imported as memsam_training: the sam2 wheel already owns a top-level `training` package
    packages=[*find_packages(include=["memsam_core*", "memsam_ros*"]), "memsam_training"],
    package_dir={"memsam_training": "training"},
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
)
