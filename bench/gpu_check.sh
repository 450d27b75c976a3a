#!/usr/bin/env bash
# The GPU figures in one go, on a machine with CUDA (run from the repository root):
#   LIGHTNING_STACKS_DATA=<mnist dir> bash bench/gpu_check.sh
# 1. the device-parametrized tests (their `device` fixture is CUDA here), the compile test included;
# 2. ../shared/probes/gpu_limit.py (the plain graphed step: the reference), bench/train_throughput.py
#    --accelerator gpu, eager and with --cuda-graphs (batch 128 and 1024), bench/reduce_speed.py
#    --device cuda (n=1024, medians of 5 runs);
# 3. the wall time of one seed of configs/mnist_shrink.yaml end to end on the GPU, eager and graphed.
# Each part prints its figures; a failing part is reported and the next one still runs.
set -u -o pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA here'; print('device:', torch.cuda.get_device_name(0))" || exit 1
status=0
echo "== device tests"
python -m pytest -q -p no:cacheprovider tests/test_gpu_path.py tests/test_reduction_core.py tests/test_reduction_pipeline.py \
  tests/test_streaming.py tests/test_model.py tests/test_data.py tests/test_kmeans.py tests/test_cuda_graphs.py 2>&1 | tail -15 || status=1
echo "== probes/gpu_limit.py (plain torch; the graphed step is the reference)"
[ -f ../shared/probes/gpu_limit.py ] && python ../shared/probes/gpu_limit.py || echo "(no ../shared/probes/gpu_limit.py)"
echo "== train_throughput --accelerator gpu"
python bench/train_throughput.py --accelerator gpu --repeats 3 --batch-size 128 1024 || status=1
python bench/train_throughput.py --accelerator gpu --cuda-graphs --repeats 3 --batch-size 128 1024 || status=1
echo "== reduce_speed --device cuda"
python bench/reduce_speed.py --device cuda --widths 1024 || status=1
echo "== mnist_shrink, seed 0, end to end"
out=$(mktemp -d)
start=$(date +%s.%N)
python train.py configs/mnist_shrink.yaml seed=0 "out_dir=$out/run" logger.kind=none trainer.accelerator=gpu \
  trainer.devices=1 --quiet 2>&1 | tail -8 || status=1
end=$(date +%s.%N)
python -c "print(f'mnist_shrink wall_s={$end - $start:.1f}')"
start=$(date +%s.%N)
python train.py configs/mnist_shrink.yaml seed=0 "out_dir=$out/graphed" logger.kind=none trainer.accelerator=gpu \
  trainer.devices=1 trainer.cuda_graphs=true --quiet 2>&1 | tail -3 || status=1
end=$(date +%s.%N)
python -c "print(f'mnist_shrink cuda_graphs wall_s={$end - $start:.1f}')"
rm -rf "$out"
exit $status
