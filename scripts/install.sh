#!/usr/bin/env bash
# Install sdart with pip: torch of the chosen flavour first, then the package and its extras.
# The ONE install path: CI (.ci/run), docker/Dockerfile.cpu and docker/Dockerfile.cuda all run this script,
# so a green CI proves the steps the images take even where no Docker engine runs.
#
#   scripts/install.sh [--torch-only] [--editable] [EXTRAS]      e.g. scripts/install.sh --editable test,ray
#
# Environment:
#   SDART_TORCH            cpu (default) | cu126 | cu128 | … (a CUDA flavour of the PyTorch wheel index) | none
#                          (none: keep the torch already installed, e.g. on Colab)
#   SDART_TORCH_VERSION    default 2.13.0, the CPU wheel our machines carry; pyproject's range must admit it
#   SDART_TORCH_INDEX_URL  where torch comes from. Default: for cuXXX the PyTorch index for that flavour; for cpu
#                          pip's own configuration (a local wheel on our CI machines). PyPI's Linux torch is a
#                          CUDA build, so Dockerfile.cpu sets the PyTorch CPU index here.
#   PYTHON                 the interpreter whose pip installs (default python3: the active venv's, if any)
#
# --torch-only   stop after torch: Dockerfiles install it in its own cached layer, before copying the source.
# --editable     pip install -e (development and CI); images install a regular, non-editable copy.
set -euo pipefail

torch_only=0
editable=0
extras=""
for arg in "$@"; do
    case "$arg" in
        --torch-only) torch_only=1 ;;
        --editable) editable=1 ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) extras="$arg" ;;
    esac
done

flavour="${SDART_TORCH:-cpu}"
version="${SDART_TORCH_VERSION:-2.13.0}"
python="${PYTHON:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
pip=("$python" -m pip install --disable-pip-version-check)

case "$flavour" in
    cpu) index="${SDART_TORCH_INDEX_URL:-}" ;;
    cu[0-9]*) index="${SDART_TORCH_INDEX_URL:-https://download.pytorch.org/whl/$flavour}" ;;
    none) index="" ;;
    *) echo "install.sh: SDART_TORCH=$flavour: use cpu, none or a CUDA flavour such as cu126" >&2; exit 2 ;;
esac

# 1. torch, alone, so that the package step below finds it satisfied and never swaps in another build.
if [[ "$flavour" != none ]]; then
    if [[ -n "$index" ]]; then
        "${pip[@]}" --index-url "$index" "torch==$version"
    else
        "${pip[@]}" "torch==$version"
    fi
fi
[[ "$torch_only" == 1 ]] && exit 0

# 2. sdart and its extras; pinning torch again makes a resolver that wants another torch fail loudly instead.
target="$root${extras:+[$extras]}"
pin=()
[[ "$flavour" != none ]] && pin=("torch==$version")
if [[ "$editable" == 1 ]]; then
    "${pip[@]}" "${pin[@]}" -e "$target"
else
    "${pip[@]}" "${pin[@]}" "$target"
fi
"$python" -c "import sdart, torch; print(f'sdart {sdart.__version__} with torch {torch.__version__}, '
                                         f'CUDA build: {torch.version.cuda or \"no\"}')"
