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
#   SDART_TORCHVISION_VERSION  default: the release made for that torch (torch 2.X.Y → torchvision 0.(X+15).Y).
#                          spandrel (upscaler models) needs torchvision, and only the build for the installed torch
#                          loads, so it comes from torch's index; for cpu without one, from the PyTorch CPU index.
#                          Where none can be had, upscalers run without the two architectures that need it
#                          (RestoreFormer, LaMa; docs/upscalers.md).
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
IFS=. read -r _ torch_minor torch_patch <<<"${version%%+*}"
vision_version="${SDART_TORCHVISION_VERSION:-0.$((torch_minor + 15)).${torch_patch:-0}}"
cpu_index="https://download.pytorch.org/whl/cpu"
python="${PYTHON:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
pip=("$python" -m pip install --disable-pip-version-check)

case "$flavour" in
    cpu) index="${SDART_TORCH_INDEX_URL:-}" ;;
    cu[0-9]*) index="${SDART_TORCH_INDEX_URL:-https://download.pytorch.org/whl/$flavour}" ;;
    none) index="" ;;
    *) echo "install.sh: SDART_TORCH=$flavour: use cpu, none or a CUDA flavour such as cu126" >&2; exit 2 ;;
esac

# 1. torch and its torchvision, alone, so that the package step below finds them satisfied and never swaps in
#    another build.
if [[ "$flavour" != none ]]; then
    if [[ -n "$index" ]]; then
        "${pip[@]}" --index-url "$index" "torch==$version" "torchvision==$vision_version"
    else
        "${pip[@]}" "torch==$version"
        # torchvision of the same build as the torch pip took: PyPI's (a CUDA build) beside PyPI's torch; beside a
        # CPU build (local version +cpu, as on our machines) the PyTorch CPU index's, asked for with its label so
        # that pip cannot take PyPI's CUDA build of that number instead.
        label="$("$python" -c 'import torch; print(torch.__version__.partition("+")[2])')"
        if [[ "$label" == cpu ]]; then
            if ! "${pip[@]}" --no-deps --index-url "$cpu_index" --timeout 20 --retries 1 "torchvision==$vision_version+cpu"; then
                echo "install.sh: torchvision $vision_version+cpu is out of reach ($cpu_index); upscaler models" \
                     "will run without RestoreFormer and LaMa (docs/upscalers.md)" >&2
            fi
        else
            "${pip[@]}" "torchvision==$vision_version"
        fi
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

# 3. A torchvision that does not load beside this torch (PyPI's CUDA build, pulled in by spandrel where torch's
#    index was out of reach) would break transformers' image processors: remove it. sdart's upscalers import
#    spandrel without it (sdart.upscalers.arches).
if ! "$python" -c "import torchvision" >/dev/null 2>&1 && "$python" -m pip show -q torchvision >/dev/null 2>&1; then
    echo "install.sh: the torchvision pip chose does not load beside torch $version (a build for another torch);" \
         "removing it: upscaler models run without RestoreFormer and LaMa (docs/upscalers.md)" >&2
    "$python" -m pip uninstall --disable-pip-version-check -y -q torchvision
fi
"$python" -c "import sdart, torch; print(f'sdart {sdart.__version__} with torch {torch.__version__}, '
                                         f'CUDA build: {torch.version.cuda or \"no\"}')"
