"""A subscriber in its own process, as a user's would be: counts /stereo/disparity (reliable) and prints each
received stamp's seconds, one per line, then `done N` once N arrived or after TIMEOUT seconds.

    python listener.py N TIMEOUT
"""
import sys
import time

import rclpy
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from stereo_msgs.msg import DisparityImage


def main() -> None:
    n, timeout = int(sys.argv[1]), float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("listener")
    stamps = []
    node.create_subscription(DisparityImage, "/stereo/disparity", lambda m: stamps.append(m.header.stamp.sec),
                             QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE))
    print("listening", flush=True)
    end = time.monotonic() + timeout
    while len(stamps) < n and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    for s in stamps:
        print(s, flush=True)
    print(f"done {len(stamps)}", flush=True)
    try:
        node.destroy_node()
        rclpy.shutdown()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
