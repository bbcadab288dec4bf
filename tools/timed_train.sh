#!/usr/bin/env bash
# Continue a training run inside a fixed wall-clock budget, with a one-cycle schedule that still ends at lr 0.
#
#   tools/timed_train.sh CONFIG RESUME RUN_DIR BUDGET_S RESUME_LR [PROBE_S]
#
# For a lent GPU whose speed is not known beforehand (docs/TRAINING.md). Three phases, each an ordinary `ges train`:
#   1. probe: resume RESUME with CONFIG's schedule for PROBE_S seconds (default 90), then SIGTERM; the trainer
#      finishes its step and writes RUN_DIR/checkpoint.pt;
#   2. plan: from the probe's logged steps_per_s, the number of steps that fit in what is left of BUDGET_S (less a
#      margin for start-up and the final evaluation), and the one-cycle peak whose linear anneal passes RESUME_LR
#      at the step the probe started from; written to RUN_DIR/timed.yaml;
#   3. train: resume RUN_DIR/checkpoint.pt with RUN_DIR/timed.yaml --reschedule until the schedule ends (the
#      trainer evaluates and writes final.safetensors) or the budget runs out (SIGTERM: a checkpoint is written).
# The probe's steps ran at CONFIG's placeholder lr: RUN_DIR/timed.log says how many, metrics.jsonl their lr.
# RUN_DIR must be new (its metrics.jsonl is what the plan reads).
set -u
if [ $# -lt 5 ]; then
  sed -n 2,14p "$0"; exit 2
fi
CONFIG=$1 RESUME=$2 RUN=$3 BUDGET=$4 RESUME_LR=$5 PROBE=${6:-90}
GES=${GES:-python3 -m ges_core.cli}
MARGIN=${MARGIN:-60}          # seconds kept for the trainer's start-up, its last checkpoint and the final evaluation
T0=$(date +%s)
if [ -e "$RUN/metrics.jsonl" ]; then
  echo "timed_train: $RUN already holds a run; give a new RUN_DIR" >&2; exit 2
fi
mkdir -p "$RUN"
LOG=$RUN/timed.log
say() { echo "[timed_train $(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }

run_until() {   # run_until DEADLINE ARGS...: a trainer, SIGTERMed at DEADLINE (epoch seconds) if still running
  local deadline=$1; shift
  $GES train "$@" --out-dir "$RUN" --no-progress >> "$RUN/train.log" 2>&1 &
  local pid=$!
  while kill -0 $pid 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "deadline: SIGTERM to the trainer (pid $pid)"
      kill -TERM $pid
      break
    fi
    sleep 2
  done
  wait $pid
  local rc=$?
  say "trainer exited with $rc"
  return $rc
}

say "probe: $CONFIG from $RESUME for $PROBE s"
run_until $(( T0 + PROBE )) --config "$CONFIG" --resume "$RESUME" --reschedule || true
[ -f "$RUN/checkpoint.pt" ] || { say "the probe wrote no checkpoint; see $RUN/train.log"; exit 1; }

PYTHONPATH=${PYTHONPATH:-$PWD} python3 - "$CONFIG" "$RESUME" "$RUN" "$BUDGET" "$RESUME_LR" "$T0" "$MARGIN" <<'EOF' | tee -a "$LOG"
import json, sys, time, warnings
import torch, yaml
from ges_core.train import TrainConfig, load_checkpoint
config, resume, run, budget, resume_lr, t0, margin = sys.argv[1:]
start = int(load_checkpoint(resume)["step"])
rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
rates = [r["steps_per_s"] for r in rows if "steps_per_s" in r and r["step"] > start]
if len(rates) < 2:
    sys.exit(f"the probe logged {len(rates)} rates after step {start}: too short to measure (raise PROBE_S)")
rate = sorted(rates[1:])[len(rates[1:]) // 2]           # median, the first interval (start-up) left out
done = int(load_checkpoint(f"{run}/checkpoint.pt")["step"])
left = float(budget) - (time.time() - float(t0)) - float(margin)
total = done + max(1, int(0.9 * rate * left))           # 10 % slack: a probe ran 10 % faster than its sequel on the CPU
# the trainer's own schedule at peak 1, read at the resumed step, gives the peak that puts lr there at RESUME_LR
unit = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
sched = torch.optim.lr_scheduler.OneCycleLR(unit, max_lr=1.0, total_steps=total, cycle_momentum=False,
                                            pct_start=TrainConfig.load(config).pct_start, anneal_strategy="linear")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for _ in range(start):
        sched.step()
peak = float(resume_lr) / sched.get_last_lr()[0]
cfg = yaml.safe_load(open(config))
cfg.update(steps=total, lr=peak)
yaml.safe_dump(cfg, open(f"{run}/timed.yaml", "w"), sort_keys=False)
print(f"plan: the probe trained steps {start}-{done}; {rate:.3f} steps/s (median of {len(rates) - 1} intervals); "
      f"{left:.0f} s left -> schedule to step {total}, peak lr {peak:.3e} (lr {float(resume_lr):.2e} at step {start})")
EOF
[ -f "$RUN/timed.yaml" ] || { say "no plan; the checkpoint of the probe is in $RUN"; exit 1; }

say "train: $RUN/timed.yaml from $RUN/checkpoint.pt"
run_until $(( T0 + BUDGET - 15 )) --config "$RUN/timed.yaml" --resume "$RUN/checkpoint.pt" --reschedule
tail -n 3 "$RUN/metrics.jsonl" | tee -a "$LOG"
