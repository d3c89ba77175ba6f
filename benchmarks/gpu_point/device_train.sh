#!/bin/bash
# The gpu profile's codec (N=128, M=192, 256² crops, batch 16) trained on a lent GPU machine at a few λ
# at once, for as many steps as fit in TRAIN_S seconds (a short probe of all of them first measures the
# time per step). Weights-only files and the run folders' logs come back in $OUT; measure them here with
# benchmarks/gpu_point/evaluate_point.py.
#
# The machine has its own Python (3.12) and PyTorch and no network: what it lacks travels with the
# working tree. Prepare once, here (.dev/ and data/*/ are ignored by git):
#   mkdir -p .dev && echo /.dev/ >> .git/info/exclude
#   python3 -m pip download --no-deps --no-binary :all: compressai==1.2.8 -d .dev   # no cp312 wheel
#   cp -r .venv/lib/python3.11/site-packages/pytorch_msssim .dev/                  # pure Python
#   mkdir -p data/bsds500 && cp -r ../shared/data/bsds500/* data/bsds500/           # training images
# Then, with the device tool (the run that made results/gpu_point.csv, on one H200):
#   run(command='OUT=$OUT TRAIN_S=390 PROBE=120 LMBDAS="8e-3 4e-3" bash benchmarks/gpu_point/device_train.sh',
#       carry=[".dev", "data/bsds500"], timeout_s=540)
# CompressAI's C++ extensions are not built there: _CXX.py (a Python port of its table builder, same
# output) and ans.py (no entropy coder: training never codes) stand in; pillow_heif.py and
# pillow_jxl.py are no-ops (training reads JPEG files only).
# Validation is off (no Kodak on the machine); every run trains with one seed, lr 5e-4, cosine decay.
set -u
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TRAIN_S=${TRAIN_S:-390}; EXTRA=${EXTRA:-}; LMBDAS=${LMBDAS:-"8e-3 4e-3"}; PROBE=${PROBE:-120}
HERE=benchmarks/gpu_point
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
S=/tmp/site; rm -rf $S; mkdir -p $S
tar xzf .dev/compressai-1.2.8.tar.gz -C /tmp && cp -r /tmp/compressai-1.2.8/compressai $S/ \
  && cp $HERE/_CXX.py $HERE/ans.py $S/compressai/ && cp -r .dev/pytorch_msssim $HERE/pillow_heif.py $HERE/pillow_jxl.py $S/ || exit 3
export PYTHONPATH=$S:$PWD
python3 -W ignore -c "import torch, lic_utils.train; print('torch', torch.__version__, torch.cuda.is_available())" || exit 4
COMMON="--profile gpu --set num_val_crops=0 --set threads=4 --set progress=false $EXTRA"
# probe: the same runs for PROBE steps, all at once, to measure the time per step
for l in $LMBDAS; do
  python3 -m lic_utils train $COMMON --lmbda $l --steps $PROBE --set log_every=20 --set warmup=20 \
    --out /tmp/probe_$l > "$OUT/probe_$l.txt" 2>&1 &
done
wait
PER=$(python3 - $LMBDAS <<'PY'
import sys, pandas as pd
t = []
for l in sys.argv[1:]:
    d = pd.read_csv(f"/tmp/probe_{l}/log.csv").dropna(subset=["loss"])
    a, b = d.iloc[min(1, len(d) - 2)], d.iloc[-1]
    t.append((b.time_s - a.time_s) / (b.step - a.step))
print(max(t))
PY
) || { tail -n 30 "$OUT"/probe_*.txt; exit 5; }
STEPS=$(python3 -c "print(max(500, min(60000, int($TRAIN_S / $PER) // 250 * 250)))")
echo "probe: $PER s/step with $(echo $LMBDAS | wc -w) runs at once -> $STEPS steps; setup $(( $(date +%s) - t0 )) s"
echo "$PER $STEPS" > "$OUT/probe.txt"
for l in $LMBDAS; do
  timeout $((TRAIN_S + 90)) python3 -m lic_utils train $COMMON --lmbda $l --steps $STEPS \
    --lr 5e-4 --lr-schedule cosine --set warmup=500 --out /tmp/gpu_$l > /tmp/train_$l.txt 2>&1 &
done
wait
echo "trained in $(( $(date +%s) - t0 )) s"
python3 - $LMBDAS <<'PY'
import os, sys, torch
out = os.environ["OUT"]
for l in sys.argv[1:]:
    p = f"/tmp/gpu_{l}/checkpoint.pt"
    if not os.path.exists(p):
        print("no checkpoint for", l); continue
    ck = torch.load(p, map_location="cpu", weights_only=True)
    torch.save({"config": ck["config"], "state_dict": ck["state_dict"]}, f"{out}/gpu_{l}.pt")
    print(l, "exported")
PY
tar czf "$OUT/logs.tgz" -C /tmp $(cd /tmp && ls -d gpu_*/config.json gpu_*/log.csv gpu_*/final.json train_*.txt 2>/dev/null)
tail -n 3 /tmp/train_*.txt
echo "done in $(( $(date +%s) - t0 )) s"
