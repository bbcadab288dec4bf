"""ges_ros: deep-equilibrium stereo (ges_core, pure PyTorch) and its ROS 2 node (ges_ros, rclpy).

One distribution, two packages; an ament_python package for colcon, and a plain pip package.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ges_ros"

ROS_WHEELS = [
    "ros-kilted-rclpy",
    "ros-kilted-sensor-msgs",
    "ros-kilted-stereo-msgs",
    "ros-kilted-diagnostic-msgs",
    "ros-kilted-rmw-fastrtps-cpp",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="GES deep-equilibrium stereo: dense disparity and point clouds for ROS 2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["ges_core", "ges_core.*", "ges_ros", "ges_ros.*"]),
    package_data={"ges_core": ["weights/*.safetensors", "weights/*.json", "weights/*.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=[
        "torch>=2.4",
        "numpy",
        "opencv-python-headless",
        "safetensors",
        "pyyaml",
        "tqdm",
        "rosbags",
        "numba",          # the point cloud and disparity message writers (ges_ros.messages)
    ],
    extras_require={
        "ros": ROS_WHEELS,
        "train": ["tensorboard", "matplotlib", "scikit-image"],   # scikit-image: the photo pairs' segments
        # the CPU backend (backend auto/openvino): bf16 on AMX / AVX-512 BF16 CPUs; onnx: the network's parts
        # reach OpenVINO through torch's ONNX exporter; nncf: precision int8 (post-training quantization)
        "openvino": ["openvino>=2025.0", "onnx", "nncf>=2.16"],
        "test": ["pytest", "pytest-timeout", "hypothesis", "scikit-image", "onnx", "onnxruntime", "openvino>=2025.0",
                 "nncf>=2.16",
                 "colcon-common-extensions", "matplotlib"],
        "dev": ["ruff", "flake8"],
    },
    entry_points={
        "console_scripts": [
            "ges = ges_ros.cli:main",
            "stereo_node = ges_ros.stereo_node:main",
        ],
    },
    zip_safe=False,
)
