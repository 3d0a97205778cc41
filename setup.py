"""ament_python package: `colcon build` with a system ROS 2, or `pip install -e .` in the project venv."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "tinybev_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["tinybev_ros", "tinybev_ros.*", "training", "training.*"]),
    package_data={"tinybev_ros": ["data/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="TinyBEV-ROS developers",
    maintainer_email="dev@tinybev.org",
    description="Camera-only multi-task BEV perception for ROS 2, distilled from a large teacher.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "tinybev = tinybev_ros.cli:main",
            "nuscenes_to_bag = tinybev_ros.ros.bag.nuscenes_to_bag:main",
            "tinybev_node = tinybev_ros.ros.node_main:main",
        ],
    },
)
