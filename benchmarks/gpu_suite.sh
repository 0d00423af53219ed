#!/usr/bin/env bash
# benchmarks/gpu_suite.sh -- issue 14's GPU measurements in one prepared run.
#
# For one CUDA GPU (made for an H100-class one), in under 8 minutes, offline,
# without weights (CLIP ViT-B/16 with random weights is as fast as a trained
# one) and with its own ImageNet-sized JPEGs (500x375, written once to
# benchmarks/_data/ by as many processes as there are CPUs):
#
#   run "eager"   perf_profile.py --parts data,step,predict,baseline: the data
#                 pipeline with half and all-but-one of the CPUs as workers, the
#                 model step (AdaptFormer, batch 128, bf16, fused SGD) with its
#                 FLOP/s and share of the GPU's peak bf16 FLOP/s, prediction on
#                 device tensors with and without TTE, and the step against the
#                 bare frozen tower (same dtype)
#   run "fit"     perf_profile.py --parts fit: LiftPlusClassifier.fit for one
#                 epoch from the JPEG files, then decision_function without and
#                 with TTE (what a user gets)
#   run "compile" perf_profile.py --parts step --compile: the model step
#                 under torch.compile (compilation counted as warm-up)
#
# and checks the H100-class targets (model step >= 40% of peak bf16 FLOP/s,
# fit from JPEG files >= 3,000 images/s, TTE >= 5,000 views/s). It writes
# benchmarks/results/gpu_suite-<UTC time>-<host>-<pid>.json and .md (new
# names every run, written atomically; never another run's files) and prints
# the markdown. A run that fails or exceeds its time limit is reported as
# such; the others still count. With --tests it also runs the test suite
# (pytest, the CUDA device visible), and the outcomes join the report (the
# logs beside it, <name>.tests-cuda.log and <name>.tests-other.log, as is the
# full log of a run that did not finish, <name>.<run>.log). Exit status: 0
# when every run finished (and the tests passed), 1 when one did not (or a
# test failed or was not run), 2 for bad arguments, 3 when there is no CUDA
# device, 4 when liftlearn or its dependencies do not install or import.
#
#   bash benchmarks/gpu_suite.sh                 # on a GPU machine
#   bash benchmarks/gpu_suite.sh --dry-run       # CPU smoke run: tiny backbone, tiny sizes,
#                                                # all parts in one run, no compile
#
# The project's GPU machines (the `device` tool) have no network and no
# open_clip: make the wheels here first (benchmarks/gpu_wheels.sh writes .whl/),
# carry .whl, and run there, in one call of at most 600 s:
#
#   bash benchmarks/gpu_suite.sh --python python3 --wheels .whl --tests --results-dir "$OUT"
#
# Options: --results-dir DIR (default benchmarks/results), --n-images N
# (default 8192), --python PY (default: $PYTHON, else python3), --wheels DIR
# (install, offline, each wheel of DIR whose package the machine lacks or has
# older -- timm and scikit-learn only below what liftlearn needs -- into a
# folder put on PYTHONPATH; liftlearn itself runs from this checkout),
# --tests (the tests marked cuda after the fit run, the others last;
# GPU_SUITE_TESTS names what pytest collects, default tests), --budget S
# (seconds the whole script may take, default 570 for the device tool's
# 600 s calls: pass the call's limit less 30; every run and test phase is cut
# to what is left, and one with under 30 s left is skipped and reported).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="$ROOT/benchmarks/results"
N_IMAGES=8192
DRY_RUN=0
PY="${PYTHON:-$(command -v python3 >/dev/null 2>&1 && echo python3 || echo python)}"
WHEELS=""
TESTS=0
BUDGET=570

die() { echo "gpu_suite.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --results-dir) [ $# -ge 2 ] || die "--results-dir needs a folder"; RESULTS_DIR="$2"; shift ;;
    --n-images) [ $# -ge 2 ] || die "--n-images needs a number"; N_IMAGES="$2"; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY="$2"; shift ;;
    --wheels) [ $# -ge 2 ] || die "--wheels needs a folder"; WHEELS="$2"; shift ;;
    --tests) TESTS=1 ;;
    --budget) [ $# -ge 2 ] || die "--budget needs a number of seconds"; BUDGET="$2"; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
case "$N_IMAGES" in ''|*[!0-9]*) die "--n-images must be a positive integer, not '$N_IMAGES'" ;; esac
[ "$N_IMAGES" -ge 1 ] || die "--n-images must be >= 1"
case "$BUDGET" in ''|*[!0-9]*) die "--budget must be a whole number of seconds, not '$BUDGET'" ;; esac
if [ -n "$WHEELS" ]; then
  wheels_dir="$(cd "$WHEELS" 2>/dev/null && pwd)" \
    || die "--wheels: no folder '$WHEELS' (make it with benchmarks/gpu_wheels.sh, and carry it)"
  ls "$wheels_dir"/*.whl >/dev/null 2>&1 || die "--wheels: no .whl file in '$WHEELS'"
  WHEELS="$wheels_dir"
fi

cd "$ROOT" || exit 2
export HF_HUB_OFFLINE=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
NPROC="$(nproc 2>/dev/null || echo 1)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_suite.XXXXXX")" || exit 2
trap 'rm -rf "$WORK"' EXIT

if [ "$DRY_RUN" = 1 ]; then
  COMMON=(--backbone liftlearn-tiny-vit --device cpu --threads 1 --batch-size 4 --steps 1 --warmup 1
          --rounds 1 --source synthetic --data-dir "$WORK/jpegs" --n-images 16 --decode-images 8)
  WORKERS=(0 1); LIMIT_EAGER=120
else
  # Fail fast, before any JPEG is written, where there is no GPU.
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_suite.sh: no CUDA device (torch.cuda.is_available() is False, or torch does not" \
         "import with '$PY'): this suite measures a GPU. Run it on a machine with one, or pass" \
         "--dry-run for the CPU smoke run." >&2
    exit 3
  fi
  half=$(( NPROC / 2 > 0 ? NPROC / 2 : 1 )); most=$(( NPROC - 1 > 1 ? NPROC - 1 : 1 ))
  [ "$most" -gt 16 ] && most=16
  [ "$half" -ge "$most" ] && half=$(( most > 1 ? most - 1 : 0 ))
  COMMON=(--backbone ViT-B-16 --device cuda --batch-size 128 --steps 20 --warmup 5 --rounds 3
          --source synthetic --n-images "$N_IMAGES" --decode-images 512)
  # The first run writes the JPEGs (one process per CPU), hence its margin.
  WORKERS=($half $most); LIMIT_EAGER=120; LIMIT_FIT=150; LIMIT_COMPILE=180
fi

if [ -n "$WHEELS" ]; then
  # No resolver (it would judge the whole image's dependency tree): each
  # wheel whose package is missing here or older goes, without its
  # dependencies, into a folder of its own on PYTHONPATH. The import check
  # below says whether that was enough.
  if ! "$PY" - "$WHEELS" >"$WORK/wheels.txt" 2>"$WORK/pip.log" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from packaging.version import Version
# The fallbacks replace the machine's own only below what liftlearn needs
# (setup.py; open_clip_torch's requirement of timm); the others where older.
FLOORS = {"scikit_learn": "1.6", "timm": "1.0.17"}
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, wanted = wheel.name.split("-")[:2]
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    floor = FLOORS.get(name.lower().replace("-", "_"), wanted)
    install = have is None or Version(have) < Version(floor)
    if install:
        print(wheel)
    print(f"gpu_suite.sh: {name} {wanted}: " + ("installing" if have is None else
          f"installing over {have}" if install else f"{have} is here"), file=sys.stderr)
PYEOF
  then
    echo "gpu_suite.sh: could not read the wheels in $WHEELS:" >&2; tail -n 5 "$WORK/pip.log" >&2
    exit 4
  fi
  cat "$WORK/pip.log" >&2
  if [ -s "$WORK/wheels.txt" ]; then
    mapfile -t wheels <"$WORK/wheels.txt"
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
        --target "$WORK/site" "${wheels[@]}" >"$WORK/pip.log" 2>&1; then
      echo "gpu_suite.sh: pip could not install the wheels:" >&2; tail -n 20 "$WORK/pip.log" >&2
      exit 4
    fi
    export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH#"$ROOT"}"
  fi
fi
# Before any JPEG is written: what every run imports.
if ! "$PY" -c 'import liftlearn, open_clip, sklearn, torchvision' >"$WORK/import.log" 2>&1; then
  echo "gpu_suite.sh: liftlearn or a dependency does not import with '$PY':" >&2
  tail -n 5 "$WORK/import.log" >&2
  echo "gpu_suite.sh: on a machine without a network, make the wheels where there is one" \
       "(bash benchmarks/gpu_wheels.sh), carry .whl and pass --wheels .whl" >&2
  exit 4
fi

status=0
# Seconds left of --budget, less a margin for the report.
budget_left() { echo $(( BUDGET - SECONDS - 20 )); }

run() {  # run NAME LIMIT_S perf_profile-arguments...
  local name="$1" limit="$2" left; shift 2
  left=$(budget_left)
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 30 ]; then
    echo "gpu_suite.sh: run '$name' skipped: ${left} s of the ${BUDGET} s budget left" \
      | tee "$WORK/$name.log" >&2
    status=1
    return
  fi
  echo "gpu_suite.sh: run '$name' (at most ${limit} s)" >&2
  timeout -k 10 "$limit" "$PY" benchmarks/perf_profile.py "${COMMON[@]}" --fused \
      --json "$WORK/$name.json" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    status=1
    rm -f "$WORK/$name.json"
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      echo "gpu_suite.sh: run '$name' exceeded ${limit} s; its last lines:" >&2
    else
      echo "gpu_suite.sh: run '$name' failed (exit $rc); its last lines:" >&2
    fi
    tail -n 20 "$WORK/$name.log" >&2
  fi
}

tests() {  # tests PHASE MARK-EXPRESSION CAP_S [pytest options...]: one pytest run, its log and status
  local phase="$1" mark="$2" cap="$3" left; shift 3
  left=$(budget_left)
  [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -lt 30 ]; then
    echo "skipped: only ${left} s of the ${BUDGET} s budget left" >"$WORK/tests-$phase.log"
    echo "rc=skipped seconds=0 limit=$cap" >"$WORK/tests-$phase.status"
    status=1
    return
  fi
  echo "gpu_suite.sh: tests '$phase' (at most ${cap} s): pytest -m '$mark' ${*:+$* }${targets[*]}" >&2
  local t0=$SECONDS rc
  # -v: under a time limit, the log says which tests ran, passed and failed.
  OMP_NUM_THREADS=2 timeout -k 10 "$cap" "$PY" -m pytest -v -p no:cacheprovider -m "$mark" \
      "${timeout_opt[@]}" "$@" "${targets[@]}" >"$WORK/tests-$phase.log" 2>&1
  rc=$?
  # On a GPU machine the cuda tests must run, not all be skipped.
  if [ $rc -eq 0 ] && [ "$phase" = cuda ] && [ "$DRY_RUN" = 0 ] \
      && ! tail -n 1 "$WORK/tests-$phase.log" | grep -Eq '[0-9]+ passed'; then
    rc=none-passed
  fi
  echo "rc=$rc seconds=$(( SECONDS - t0 )) limit=$cap" >"$WORK/tests-$phase.status"
  # 5: nothing collected (no test of that mark among the targets).
  [ "$rc" = 0 ] || [ "$rc" = 5 ] || status=1
}

if [ "$TESTS" = 1 ]; then
  # shellcheck disable=SC2206  # GPU_SUITE_TESTS is a list of paths
  targets=(${GPU_SUITE_TESTS:-tests})
  xdist=(); timeout_opt=()
  if [ "$DRY_RUN" = 0 ] && "$PY" -c 'import xdist' 2>/dev/null; then
    # Workers of two threads each: most tests are small CPU work.
    n=$(( NPROC / 2 > 8 ? 8 : NPROC / 2 )); [ "$n" -ge 2 ] && xdist=(-n "$n")
  fi
  # A test that hangs fails alone instead of taking the others' time.
  "$PY" -c 'import pytest_timeout' 2>/dev/null && timeout_opt=(--timeout 240)
fi

# Every step is cut to what is left of --budget. With --tests, the tests
# marked cuda (what no CPU can check) come before the compile run, and the
# other tests, which CI runs on every change anyway, last.
if [ "$DRY_RUN" = 1 ]; then
  # One process for all parts: the smoke run checks the plumbing, quickly.
  run eager "$LIMIT_EAGER" --parts data,step,predict,baseline,fit --workers "${WORKERS[@]}"
  [ "$TESTS" = 1 ] && tests cuda cuda 240
else
  # The first run also writes the JPEGs (once; one process per CPU).
  run eager "$LIMIT_EAGER" --parts data,step,predict,baseline --workers "${WORKERS[@]}"
  run fit "$LIMIT_FIT" --parts fit
  [ "$TESTS" = 1 ] && tests cuda cuda 240
  run compile "$LIMIT_COMPILE" --parts step --compile
fi
[ "$TESTS" = 1 ] && tests other "not cuda" 100000 "${xdist[@]}"

"$PY" - "$WORK" "$RESULTS_DIR" "$DRY_RUN" <<'PYEOF' || exit 1
import importlib.util, json, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("_liftlearn_profile", "benchmarks/perf_profile.py")
profile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile)
work, results, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
runs = {}
for name in ("eager", "fit", "compile"):
    path = work / f"{name}.json"
    runs[name] = json.loads(path.read_text()) if path.exists() else None
if dry:  # one run did everything; compile is skipped on the CPU
    runs = {"eager": runs["eager"]}
# The full log of each run that failed, and of the tests, beside the report.
logs = {f"{name}.log": (work / f"{name}.log").read_text(errors="replace")
        for name, res in runs.items() if res is None and (work / f"{name}.log").exists()}
tests = {}
for phase in ("cuda", "other"):
    if (work / f"tests-{phase}.status").exists():
        log = logs[f"tests-{phase}.log"] = (work / f"tests-{phase}.log").read_text(errors="replace")
        tests[phase] = profile.tests_outcome((work / f"tests-{phase}.status").read_text(), log)
summary, text = profile.suite_summary(runs, dry_run=dry, tests=tests or None)
print(text, flush=True)  # before the files: the output shows it even if writing fails
json_path, md_path = profile.write_results(results, "gpu_suite-dryrun" if dry else "gpu_suite",
                                           summary, text, extra=logs)
print(f"\nwrote {json_path} and {md_path}")
PYEOF
exit $status
