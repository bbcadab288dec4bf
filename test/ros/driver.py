"""A camera driver in its own process (its own DDS participant, discovered over the network as a real driver is):
publishes N small stereo pairs with reliable QoS, one every PERIOD seconds, once the stereo node has matched.

    python driver.py N PERIOD FIRST_SEC
"""
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from ges_ros.messages import rclpy_types
from ges_ros.sample import PinholeStereo, stereo_messages

TOPICS = ((Image, "/stereo/left/image_rect"), (Image, "/stereo/right/image_rect"),
          (CameraInfo, "/stereo/left/camera_info"), (CameraInfo, "/stereo/right/camera_info"))


def main() -> None:
    n, period, first = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    image = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    cam = PinholeStereo(f=100.0, cx=24.0, cy=16.0, doffs=0.0, baseline=0.1)
    rclpy.init()
    node = rclpy.create_node("driver")
    qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    pubs = [node.create_publisher(t, name, qos) for t, name in TOPICS]
    end = time.monotonic() + 20
    while not all(p.get_subscription_count() for p in pubs):
        if time.monotonic() > end:
            sys.exit("driver: no subscriber matched in 20 s")
        time.sleep(0.01)
    time.sleep(0.3)             # the subscriber's side of the match (a best-effort reader drops what comes before)
    print("publishing", flush=True)
    for k in range(n):
        for pub, msg in zip(pubs, stereo_messages(rclpy_types(), image, image, cam, sec=first + k)):
            pub.publish(msg)
        time.sleep(period)
    time.sleep(1.0)             # reliable: what is sent is delivered before the participant leaves
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
