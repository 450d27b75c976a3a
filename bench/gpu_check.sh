#!/usr/bin/env bash
# The GPU figures in one go, on a machine with CUDA (run from the repository root):
#   LIGHTNING_STACKS_DATA=<mnist dir> bash bench/gpu_check.sh
# 1. the device-parametrized tests (their `device` fixture is CUDA here), the compile test included;
# 2. bench/train_throughput.py --accelerator gpu (batch 128 and 1024) and bench/reduce_speed.py
#    --device cuda (n=1024);
# 3. the wall time of one seed of configs/mnist_shrink.yaml end to end on the GPU.
# Each part prints its figures; a failing part is reported and the next one still runs.
set -u -o pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA here'; print('device:', torch.cuda.get_device_name(0))" || exit 1
status=0
echo "== device tests"
python -m pytest -q -p no:cacheprovider tests/test_gpu_path.py tests/test_reduction_core.py tests/test_reduction_pipeline.py \
  tests/test_streaming.py tests/test_model.py tests/test_data.py 2>&1 | tail -15 || status=1
echo "== train_throughput --accelerator gpu"
python bench/train_throughput.py --accelerator gpu --repeats 3 --batch-size 128 1024 || status=1
echo "== reduce_speed --device cuda"
python bench/reduce_speed.py --device cuda --widths 1024 || status=1
echo "== mnist_shrink, seed 0, end to end"
out=$(mktemp -d)
start=$(date +%s.%N)
python train.py configs/mnist_shrink.yaml seed=0 "out_dir=$out/run" logger.kind=none trainer.accelerator=gpu \
  trainer.devices=1 --quiet 2>&1 | tail -8 || status=1
end=$(date +%s.%N)
python -c "print(f'mnist_shrink wall_s={$end - $start:.1f}')"
rm -rf "$out"
exit $status
