#!/usr/bin/env bash
# Issue 17's checks and issue 19's kernel table on one GPU, in one call: issue 17's figures first (about
# 5 minutes on an H200), then the kernels (about 3); each step has its own time limit, so one failure
# does not eat the rest, and writes its JSON line to results.jsonl the moment it ends.
#
# On the device machine, from the repository root, after the line that /work/shared/gpu/prepare.sh
# prints last (it installs the packed wheels: diffusers, the tokenizers' vocabularies, ffmpeg):
#     <that line> bash bench/gpu/gpu_session.sh
# Results, under $OUT:
#   results.jsonl  one line per step: {"step", "rc", "seconds", "result": the step's last JSON line or null}
#   log.txt        each step's command and the tail of its stderr
#   verdict.json   issue 17's criteria read from results.jsonl (bench/gpu/gpu_verdict.py)
#   STEP.stdout    all that each step printed
# Steps, in order of what matters most:
#   machine       the card, driver, libraries; whether the allocator took expandable segments; Sage visible?
#   build         bench/gpu/full_set.py: the stand-in set at full size (~40 GB) in /dev/shm (else /tmp)
#   run_1s_6gb    640, 1 s, --vram-budget 6 --ram-budget 16 (with app.py check's plan and check --rehearse's
#                 prediction for it: the verdict holds NVML's peak against the rehearsal)
#   run_1s_free   the same without budgets: the whole-run time ratio
#   run_1s_4gb    --vram-budget 4: finishes, or refuses up front with the budget's sentence
#   gpu_report    bench/gpu/gpu_report.py, the transformer alone (resident vs streamed at 6 GiB)
#   kernels       bench/gpu/kernels.py (issue 19): s/step and PSNR per kernel combination, SageAttention
#                 visible to this step only (GPU_SESSION_SAGE), one JSON line per combination as it ends
#   run_5s_6gb    640, 5 s at 6 / 16
#   alloc_plain   run_1s_6gb with torch's default allocator (FRAMEPACK_EXPANDABLE_SEGMENTS=0)
#   finishing     bench/cpu/finishing_memory.py (issue 29): x2 upscaling (x2plus's full layout) of 544x704 clips
#                 of 37 and 145 frames at --vram-budget 6: peak heap per clip, peak VRAM against the cap
# Every app run has a cache folder of its own (full_set.py), so each encodes its prompt as a first run does.
#
# Environment: GPU_SESSION_TINY=1 runs every step with the app's tiny models at 128, 2 steps (a CPU's
# dry run, a few minutes; CI runs it); GPU_SESSION_STEPS=a,b runs only those steps (a rerun of what was
# cut short); GPU_SESSION_SECONDS the whole script's limit (default 540, scaled with the steps' limits);
# GPU_SESSION_KEEP_SET=1 keeps the stand-in set for a warm rerun (else it is deleted at the end);
# GPU_SESSION_SAGE a folder holding the unpacked sageattention package, or its wheel (kernels step only);
# GPU_REPORT_SKIP gpu_report.py's --skip; GPU_SESSION_LIMIT_SCALE multiplies each step's limit (default 1;
# 4 with TINY); KERNELS_ARGS bench/gpu/kernels.py's flags (default --no-compile; --tiny with TINY).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-session-out}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
LOG=$OUT/log.txt
START=$(date +%s)
TINY=${GPU_SESSION_TINY:-0}
KEEP_SET=${GPU_SESSION_KEEP_SET:-0}
WORK=$(mktemp -d)
# The stand-in goes at the end (40 GB of /dev/shm), only where full_set.py's marker says it built it,
# unless it is kept for a warm rerun.
trap 'rm -rf "$WORK"; [ "$KEEP_SET" != 1 ] && [ -f "${SET:-/nonexistent}/FULL_SET.json" ] && rm -rf "$SET"' EXIT
export PYTHONUNBUFFERED=1

if [ "$TINY" = 1 ]; then
    LIMIT_SCALE=${GPU_SESSION_LIMIT_SCALE:-4}  # a shared CPU is slower than an H200 even at this size
    SET=${GPU_SESSION_DIR:-$WORK/set}  # nothing is built there: the app's tiny set is its own
    SIZE=(--model tiny --resolution 128 --steps 2)
    LONG=1  # seconds of the long run
else
    free_shm=$(df --output=avail -B1 /dev/shm 2>/dev/null | tail -1)
    if [ "${free_shm:-0}" -gt $((46 * 1024 ** 3)) ]; then SET=/dev/shm/full-set; else SET=/tmp/full-set; fi
    SET=${GPU_SESSION_DIR:-$SET}
    LIMIT_SCALE=${GPU_SESSION_LIMIT_SCALE:-1}
    SIZE=(--resolution 640 --steps 25)
    LONG=5
fi
TOTAL=$((${GPU_SESSION_SECONDS:-540} * LIMIT_SCALE))
FULL_SET=(python3 bench/gpu/full_set.py --dir "$SET" "${SIZE[@]}")
BUDGETS=(--vram-budget 6 --ram-budget 16)
# gpu_report.py's slowest modes, which the runs above already cover or which issue 17 measured before:
# the published app's synchronous swap (4.82 s/step), diffusers' group offloading, the 12 GiB and
# file-mapped streaming (the app itself streams from mapped files in the runs above).
GPU_REPORT_SKIP=${GPU_REPORT_SKIP:-sync_pageable,diffusers_group_offload,stream_12gb_mapped,stream_12gb_pinned,stream_6gb_mapped}

# step NAME LIMIT_SECONDS COMMAND...: run it under its own limit (cut to what is left of the total).
step() {
    local name=$1 limit=$2
    shift 2
    if [ -n "${GPU_SESSION_STEPS:-}" ] && [[ ",$GPU_SESSION_STEPS," != *",$name,"* ]]; then return 0; fi
    local left=$((START + TOTAL - $(date +%s)))
    if [ "$left" -lt 20 ]; then
        printf '{"step": "%s", "rc": null, "seconds": 0, "result": null, "skipped": "no time left"}\n' "$name" >> "$RESULTS"
        return 0
    fi
    limit=$((limit * LIMIT_SCALE))
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s): $*" >> "$LOG"
    echo "== $name (limit ${limit}s)" >&2
    local began rc
    began=$(date +%s.%N)
    timeout --kill-after=15 "$limit" "$@" > "$WORK/stdout" 2> "$WORK/stderr"
    rc=$?
    tail -c 4000 "$WORK/stderr" >> "$LOG"
    cp "$WORK/stdout" "$OUT/$name.stdout"  # every line it printed (kernels.py: one per combination as it ends)
    python3 - "$name" "$rc" "$began" "$WORK/stdout" >> "$RESULTS" <<'EOF'
import json, sys, time
name, rc, began, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
result = None
for line in reversed(open(path, errors="replace").read().strip().splitlines()):
    try:
        result = json.loads(line)
        break
    except ValueError:
        continue
print(json.dumps({"step": name, "rc": rc, "seconds": round(time.time() - began, 1), "result": result,
                  **({"timed_out": True} if rc in (124, 137) else {})}))
EOF
    echo "   rc=$rc" >&2
}

# What the machine is: the card, the libraries, the room in /dev/shm, whether memory.configure_allocator (what
# the app's Session and CUDA device call before CUDA starts) gave the allocator expandable segments, and whether SageAttention is visible to the app's runs (it must not be:
# `--attention auto` would switch them to it, and only the first would pay Triton's compile).
MACHINE='import importlib.util, json, os, platform, shutil, subprocess, torch, transformers, diffusers
import memory
memory.configure_allocator()
smi = shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used",
                                                    "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
expandable = None
if torch.cuda.is_available():
    keep = torch.empty(1 << 20, device="cuda")
    expandable = any(s.get("is_expandable", False) for s in torch.cuda.memory._snapshot()["segments"])
print(json.dumps({"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "nvidia_smi": smi or None,
                  "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
                  "diffusers": diffusers.__version__, "python": platform.python_version(),
                  "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"), "allocator_expandable": expandable,
                  "sage_visible_to_app_runs": importlib.util.find_spec("sageattention") is not None,
                  "shm_free_bytes": shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else None,
                  "set_dir": os.environ["SET"]}))'

# SageAttention for the kernels step alone: its folder (or wheel, unpacked here) on that step's PYTHONPATH.
SAGE_PATH=
if [ -n "${GPU_SESSION_SAGE:-}" ]; then
    case "$GPU_SESSION_SAGE" in
        *.whl) python3 -m pip install -q --no-index --no-deps --target "$WORK/sage" "$GPU_SESSION_SAGE" && SAGE_PATH=$WORK/sage ;;
        *) SAGE_PATH=$GPU_SESSION_SAGE ;;
    esac
fi

step machine 60 env SET="$SET" python3 -c "$MACHINE"
step build 240 "${FULL_SET[@]}" --build-only
step run_1s_6gb 150 "${FULL_SET[@]}" --seconds 1 "${BUDGETS[@]}"
step run_1s_free 120 "${FULL_SET[@]}" --seconds 1
step run_1s_4gb 150 "${FULL_SET[@]}" --seconds 1 --vram-budget 4 --ram-budget 16
step gpu_report 180 python3 bench/gpu/gpu_report.py --json --skip "$GPU_REPORT_SKIP"
if [ "$TINY" = 1 ]; then KERNELS_ARGS=${KERNELS_ARGS:---tiny}; fi
# shellcheck disable=SC2086  # KERNELS_ARGS is a list of flags
step kernels 200 env PYTHONPATH="${SAGE_PATH:+$SAGE_PATH:}${PYTHONPATH:-$PWD}" python3 bench/gpu/kernels.py --json ${KERNELS_ARGS:---no-compile}
step run_5s_6gb 240 "${FULL_SET[@]}" --seconds "$LONG" "${BUDGETS[@]}"
# The app sets expandable_segments:True itself (run_1s_6gb); its switch back to torch's default:
step alloc_plain 120 env FRAMEPACK_EXPANDABLE_SEGMENTS=0 "${FULL_SET[@]}" --seconds 1 "${BUDGETS[@]}" --no-check
# Issue 30: one video on several GPUs, where the machine has them (the transformer at full width, NCCL,
# then a whole tiny run through the app on 2 GPUs).
if python3 -c "import sys, torch; sys.exit(torch.cuda.device_count() < 2)" 2>/dev/null; then
    step multi_gpu_bench 150 python3 bench/cpu/sequence_parallel.py --cuda --processes 1,2 --heads 24 --head-dim 128 \
        --double 2 --single 4 --latent-height 40 --latent-width 40
    step multi_gpu_run 120 python3 app.py generate --model tiny --gpus 2 --resolution 256 --seconds 1 --steps 4 \
        --prompt "a red balloon rises" --image examples/"$(ls examples | grep -m1 -iE '\.(png|jpg)$')" \
        --outputs "$WORK/multi_gpu" --json
    # CFG on the two GPUs (a CFG above 1, no step cache: parallel/group.Layout)
    step multi_gpu_cfg 120 python3 app.py generate --model tiny --gpus 2 --resolution 256 --seconds 1 --steps 4 \
        --cfg 1.5 --negative-prompt "blurry" --no-step-cache --prompt "a red balloon rises" \
        --image examples/"$(ls examples | grep -m1 -iE '\.(png|jpg)$')" --outputs "$WORK/multi_gpu_cfg" --json
fi
if [ -f bench/cpu/finishing_memory.py ]; then  # issue 29: upscaling x2 streamed, tiles under the VRAM budget
    if [ "$TINY" = 1 ]; then FINISH_SIZE=(--width 160 --height 96 --frames 9,45); else FINISH_SIZE=(--features 64 --blocks 23); fi
    step finishing 120 python3 bench/cpu/finishing_memory.py --json --vram-budget 6 "${FINISH_SIZE[@]}"
fi
# Issue 17's criteria from what ran: each figure, its limit, whether it holds.
python3 bench/gpu/gpu_verdict.py "$RESULTS" > "$OUT/verdict.json" 2>> "$LOG" || true
echo "done in $(($(date +%s) - START)) s; results in $RESULTS, criteria in $OUT/verdict.json" >&2
