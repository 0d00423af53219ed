#!/usr/bin/env bash
# benchmarks/gpu_rehearsal.sh -- the GPU machine's call, rehearsed on a CPU.
#
# A session lent a GPU has minutes of it; a call that fails on an import
# wastes them. This runs here what that call runs there, as far as a CPU
# can: a copy of the checkout as the device tool sends it (tracked and
# untracked-but-not-ignored files, .whl/ carried, no ../shared), a Python
# 3.12 virtual environment with the GPU image's PyTorch (2.11.0), torchvision
# (0.26.0) and the other packages the image has but not open_clip, then
#
#   bash benchmarks/gpu_suite.sh --dry-run --wheels .whl --tests
#
# with that environment's python: the offline install from the wheels, the
# CPU smoke run of the suite and the whole test suite. It needs a package
# registry (for the environment, made once, and the wheels) and prints the
# suite's report; exit status as gpu_suite.sh's.
#
# Options: --venv DIR (default /tmp/liftlearn-gpu-image), --python PY (a
# Python 3.12, default python3.12), --budget S (default 1500; the tests get
# what the smoke run leaves), --results-dir DIR (where the report and the
# test logs stay; default a new folder in $TMPDIR or /tmp).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV=/tmp/liftlearn-gpu-image
BASE_PY=python3.12
BUDGET=1500
RESULTS=""

die() { echo "gpu_rehearsal.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) [ $# -ge 2 ] || die "--venv needs a folder"; VENV="$2"; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; BASE_PY="$2"; shift ;;
    --budget) [ $# -ge 2 ] || die "--budget needs seconds"; BUDGET="$2"; shift ;;
    --results-dir) [ $# -ge 2 ] || die "--results-dir needs a folder"; RESULTS="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

if [ ! -x "$VENV/bin/python" ]; then
  command -v "$BASE_PY" >/dev/null || die "no '$BASE_PY': pass --python with a Python 3.12"
  "$BASE_PY" -m venv "$VENV"
  # The image's versions where the device tool's notes give them; what it
  # lacks (open_clip_torch, ftfy, wcwidth) is left out on purpose.
  "$VENV/bin/python" -m pip install -q torch==2.11.0 torchvision==0.26.0 'numpy==2.5.*' \
      huggingface-hub==1.33.0 safetensors==0.8.0 pillow scikit-learn scipy joblib regex tqdm \
      pyyaml timm hypothesis pytest pytest-xdist pytest-timeout matplotlib packaging setuptools \
      wheel
fi
# As bare as the image again after an earlier rehearsal installed into it.
"$VENV/bin/python" -m pip uninstall -q -y liftlearn open_clip_torch ftfy wcwidth >/dev/null 2>&1 \
  || true

[ -d "$ROOT/.whl" ] || bash "$ROOT/benchmarks/gpu_wheels.sh"

[ -n "$RESULTS" ] || RESULTS="$(mktemp -d "${TMPDIR:-/tmp}/gpu_rehearsal-results.XXXXXX")"
RESULTS="$(mkdir -p "$RESULTS" && cd "$RESULTS" && pwd)"
COPY="$(mktemp -d "${TMPDIR:-/tmp}/gpu_rehearsal.XXXXXX")"
trap 'rm -rf "$COPY"' EXIT
# What the device tool sends: the files git tracks or would track, and .whl.
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) \
  | (cd "$ROOT" && xargs -0 cp --parents -t "$COPY" 2>/dev/null || true)
cp -r "$ROOT/.whl" "$COPY/.whl"
cd "$COPY"
env -u PYTHONPATH bash benchmarks/gpu_suite.sh --dry-run --wheels .whl --tests \
    --budget "$BUDGET" --python "$VENV/bin/python" --results-dir "$RESULTS"
