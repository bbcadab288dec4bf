"""`ges`: one command line with subcommands (argparse lives here only)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, Trainer
    overrides = {}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.out_dir is not None:
        overrides["out_dir"] = args.out_dir
    cfg = TrainConfig.load(args.config, overrides)
    result = Trainer(cfg, resume=args.resume, progress=not args.no_progress).train()
    print(f"stopped at step {result['step']} ({'interrupted' if result['stopped'] else 'done'}); "
          f"checkpoint: {cfg.out_dir}/checkpoint.pt; non-finite steps skipped: {result['nan_skipped']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ges", description="GES deep-equilibrium stereo")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the network (CPU, one GPU, or torchrun for many)")
    p.add_argument("--config", required=True, help="training YAML, e.g. config/train/procedural_cpu.yaml")
    p.add_argument("--resume", help="checkpoint.pt to continue from")
    p.add_argument("--steps", type=int, help="override the total number of steps")
    p.add_argument("--out-dir", help="override the run directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"ges {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
