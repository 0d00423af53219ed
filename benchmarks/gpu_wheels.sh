#!/usr/bin/env bash
# benchmarks/gpu_wheels.sh -- the wheels a GPU machine without liftlearn's
# dependencies needs, fetched here, where a package registry is reachable.
#
# The GPU machines lent to this project (the `device` tool) reach no network.
# Their image holds PyTorch, torchvision, NumPy, Pillow, scikit-learn, timm,
# pytest and hypothesis, but not open_clip_torch nor its text-cleaning
# dependencies (ftfy, wcwidth). This script downloads those, plus timm and
# scikit-learn as fallbacks for an image whose own are too old for liftlearn,
# into .whl/ at the repository root (ignored by git; about 14 MB), as wheels for
# the machine's Python (default 3.12) on x86-64 Linux. Each is pinned to the
# version installed beside this script's `python`, the one the tests pass with,
# where there is one.
#
#   bash benchmarks/gpu_wheels.sh                   # then, on the GPU machine,
#   bash benchmarks/gpu_suite.sh --wheels .whl ...  # with .whl carried along
#
# gpu_suite.sh --wheels installs, offline, each of these wheels whose package
# the machine lacks or has older, into a folder it puts on PYTHONPATH.
#
# Options: --dest DIR (default .whl), --python-version X.Y (default 3.12).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.whl"
PYVER=3.12
PY="${PYTHON:-python}"

die() { echo "gpu_wheels.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) [ $# -ge 2 ] || die "--dest needs a folder"; DEST="$2"; shift ;;
    --python-version) [ $# -ge 2 ] || die "--python-version needs X.Y"; PYVER="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
case "$PYVER" in [0-9].[0-9]|[0-9].[0-9][0-9]) ;; *) die "--python-version must be X.Y, not '$PYVER'" ;; esac

# name==version where this Python has the distribution, else the bare name.
SPECS=$("$PY" - <<'PYEOF'
from importlib.metadata import PackageNotFoundError, version
for name in ("open_clip_torch", "ftfy", "wcwidth", "timm", "scikit-learn"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
PYEOF
)

mkdir -p "$DEST"
# One version of each: pip would refuse to choose between two.
for spec in $SPECS; do
  name="${spec%%==*}"; file_name="$(echo "$name" | tr '-' '_')"
  find "$DEST" -maxdepth 1 -iname "${file_name}-*.whl" ! -iname "${file_name}-${spec#*==}-*.whl" \
    -delete 2>/dev/null || true
done
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST" $SPECS
echo "gpu_wheels.sh: in $DEST:" >&2
ls -1 "$DEST" >&2
