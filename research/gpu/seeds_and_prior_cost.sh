#!/bin/bash
# One lent GPU machine (16 cores + one H200), one call: toy-probe replicates on 14 cores while
# the GPU runs the CUDA checks and the prior's cost at real sizes. Results in $OUT/results.tar.gz.
#   run: research/gpu/seeds_and_prior_cost.sh   (with .whl carried: ftfy + wcwidth, missing on that image)
set -u
T0=$(date +%s)
R=/tmp/r && mkdir -p $R
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site TQDM_DISABLE=1 PYTHONUNBUFFERED=1
{ nproc; lscpu | grep -E "Model name|Flags" | cut -c1-400; nvidia-smi -L; python3 -c "import torch; print(torch.__version__)"; } > $R/machine.txt 2>&1

# 1. The probe's two halves, plain loop and toy default, seeds 3..9: 28 single-thread jobs.
job() {  # variant seed half
  local var='default:'; [ "$1" = plain ] && var='plain:prior=null'
  timeout $((470 - $(date +%s) + T0)) taskset -c 0-13 python3 -c "import sys; from vqclip.cli import main; sys.exit(main())" \
    eval --methods overview --precision fp32 --threads 1 --seed "$2" \
    --prompts research/gpu/probe_$3.txt --variant "$var" --json $R/$1_s$2_$3.json > $R/$1_s$2_$3.log 2>&1
  echo "$1 s$2 $3 rc $? at $(( $(date +%s) - T0 )) s" >> $R/jobs.txt
}
export -f job; export R T0
( for v in default plain; do for s in 3 4 5 6 7 8 9; do for h in a b; do echo "$v $s $h"; done; done; done ) \
  | xargs -P 14 -L 1 bash -c 'job $0 $1 $2' &
EVALS=$!

# 2. The GPU, on the two cores left: CUDA tests, the toy prior on CUDA, the prior's cost.
gpu() {
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests -k cuda -m "not slow" -x 2>&1 | tail -15
  for extra in "--prior-resample-every 30" "--prior-weight 1 --init prior --prior-candidates 2"; do
    timeout 120 python3 -c "import sys; from vqclip.cli import main; sys.exit(main())" generate \
      --model toy -p "a yellow star on a black background" -i 60 --device cuda $extra \
      -o $R/toy_cuda_$(echo $extra | tr -dc 'a-z0-9').png 2>&1 | tail -4
    echo "toy on cuda ($extra): rc ${PIPESTATUS[0]}"
  done
  timeout 200 python3 benchmarks/prior_cost.py --device cuda --out $R/prior_cost_256.json 2>&1 | tail -12
  left=$((450 - $(date +%s) + T0))
  [ $left -gt 60 ] && timeout $left python3 benchmarks/prior_cost.py --device cuda --size 512 --cutn 64 \
    --steps 3 --candidates 1 --out $R/prior_cost_512.json 2>&1 | tail -10
}
taskset -c 14,15 bash -c "$(declare -f gpu); R=$R T0=$T0 gpu" > $R/gpu.txt 2>&1
wait $EVALS
cat $R/machine.txt $R/gpu.txt $R/jobs.txt
tar czf $OUT/results.tar.gz -C $R . && ls -la $OUT
echo "done at $(( $(date +%s) - T0 )) s"
