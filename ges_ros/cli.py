"""`ges`, the installed command: the core's commands (ges_core.cli: predict, eval, train, export, bench ...) plus
the ROS ones, which need no ROS install except `play`:

    ges replay IN_BAG -o OUT_BAG       the stereo node's processing over a bag (ROS 1 or ROS 2)
    ges play BAG                       publish a bag over rclpy
    ges bench node|soak                ROS-side benchmarks (with the core's modes)
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ges_core import cli as core_cli


def load_node_params(path: Optional[str]) -> dict:
    """A ROS 2 parameter file (`/**:` or `<node>:` -> `ros__parameters:`) -> flat dict; a name the node does not
    declare is an error listing the valid ones (a misspelt key would otherwise be silently ignored)."""
    from ges_core.config import read_yaml
    from .params import check_names
    if not path:
        return {}
    raw = read_yaml(path, "parameter file")
    for value in raw.values():
        if isinstance(value, dict) and "ros__parameters" in value:
            params = dict(value["ros__parameters"] or {})
            check_names(params, path)
            return params
    raise ValueError(f"{path}: no '<node or /**>: ros__parameters:' section")


def _cmd_replay(args: argparse.Namespace) -> int:
    from ges_core import load_predictor
    from .params import PARAMS
    from .processing import ProcessingParams
    from .replay import replay
    params = {p.name: p.default for p in PARAMS}
    params.update(load_node_params(args.params))
    for key in ("weights", "device", "iters", "backend", "precision", "int8_calibration"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.approximate_sync:
        params["approximate_sync"] = True
    if args.rectify:
        params["rectify"] = True
    if args.slop is not None:
        params["approximate_sync"] = True
        params["approximate_sync_tolerance_seconds"] = args.slop
    calibration = core_cli.calibration_from_args(args)
    predictor = load_predictor(params["weights"], device=params["device"], solver=params["solver"],
                               backend=params["backend"], precision=params["precision"],
                               int8_calibration=params["int8_calibration"])
    topics = {"left": args.left, "right": args.right, "left_info": args.left_info, "right_info": args.right_info}
    summary = replay(args.input, args.output, predictor, params=ProcessingParams.from_dict(params), topics=topics,
                     namespace=args.namespace, approximate=bool(params["approximate_sync"]),
                     slop=float(params["approximate_sync_tolerance_seconds"]), queue_size=int(params["queue_size"]),
                     rate=None if args.max_rate else args.rate, copy_inputs=args.copy_inputs, storage=args.storage,
                     color=args.color, overwrite=args.overwrite, progress=not args.no_progress,
                     calibration=calibration, rectify=bool(params["rectify"]))
    print("\n".join(summary.lines()))
    print(f"output bag: {args.output}")
    if summary.error or summary.interrupted:
        return 1
    if summary.frames == 0:
        print(f"ges replay: error: no frame was produced: {summary.why_empty()}", file=sys.stderr)
        return 1
    return 0


def _cmd_play(args: argparse.Namespace) -> int:
    from .play import main_play
    return main_play(args.bag, rate=args.rate, reliable=not args.best_effort, loop=args.loop,
                     namespace=args.namespace, ros_args=args.ros_args)


def add_ros_commands(sub) -> None:
    from ges_core.ov_backend import BACKEND_CHOICES, PRECISIONS
    p = sub.add_parser("replay", help="run the stereo node's processing over a bag (no ROS needed)")
    p.add_argument("input", help="input bag: a ROS 2 folder (MCAP/sqlite3) or file, or a ROS 1 .bag file")
    p.add_argument("-o", "--output", required=True, help="output bag folder (ROS 2)")
    p.add_argument("--left", help="left image topic (default: guessed from names and message counts)")
    p.add_argument("--right", help="right image topic")
    p.add_argument("--left-info", help="left camera_info topic")
    p.add_argument("--right-info", help="right camera_info topic")
    core_cli.add_calibration_args(p)
    p.add_argument("--approximate-sync", action="store_true",
                   help="pair images by nearest stamps (free-running cameras), within --slop")
    p.add_argument("--slop", type=float, default=None,
                   help="approximate sync tolerance in s (implies --approximate-sync; default 0.1)")
    p.add_argument("--rectify", action="store_true",
                   help="the images are raw: rectify them with their camera_info's D, K, R and P first (the node's "
                        "rectify parameter)")
    p.add_argument("--namespace", default="/stereo", help="output topics' namespace (default /stereo)")
    p.add_argument("--params", help="node parameter YAML, e.g. config/stereo.yaml")
    p.add_argument("--weights")
    p.add_argument("--device")
    p.add_argument("--backend", choices=BACKEND_CHOICES)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--int8-calibration", help="int8's calibration pairs: generated or a folder of pairs")
    p.add_argument("--iters", type=int)
    p.add_argument("--rate", type=float, default=None, help="feed the bag at R x its recorded speed")
    p.add_argument("--max-rate", action="store_true", help="as fast as possible (the default)")
    p.add_argument("--copy-inputs", action="store_true",
                   help="also copy the input topics to the output bag (ROS 1 messages are converted)")
    p.add_argument("--color", action="store_true", help="also write disparity_color")
    p.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("play", help="publish a ROS 2 bag over rclpy with its timing")
    p.add_argument("bag")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (0 = as fast as possible)")
    p.add_argument("--best-effort", action="store_true", help="publish best-effort instead of reliable")
    p.add_argument("--loop", action="store_true")
    p.add_argument("--namespace", default=None,
                   help="publish under this namespace instead of the bag's (its topics' common leading one): "
                        "--namespace /cam1 sends /stereo/left/image_rect as /cam1/left/image_rect")
    p.epilog = "ROS arguments go after --ros-args, as for any ROS 2 program: ges play BAG --ros-args -r FROM:=TO"
    p.set_defaults(func=_cmd_play, ros_args=[])


def build_parser() -> argparse.ArgumentParser:
    from ges_core.bench import MODES
    from .bench import MODES as ROS_MODES
    return core_cli.build_parser(bench_modes={**MODES, **ROS_MODES}, extend=add_ros_commands)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # what follows --ros-args is ROS's (remappings, parameters, log levels): passed to rclpy, not parsed here
    ros_args: List[str] = []
    if "--ros-args" in argv:
        at = argv.index("--ros-args")
        argv, ros_args = argv[:at], argv[at:]
    parser = build_parser()
    if ros_args and (not argv or argv[0] != "play"):
        parser.error("--ros-args is taken by `ges play` only")
    return core_cli.main(argv, parser=parser, extra={"ros_args": ros_args} if ros_args else None)


if __name__ == "__main__":
    sys.exit(main())
