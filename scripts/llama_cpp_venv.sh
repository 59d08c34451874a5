#!/usr/bin/env bash
# Makes (once) the virtualenv in which tests/llama_cpp.rs loads our GGUF exports in llama.cpp
# itself: target/llama-cpp/venv, with llama-cpp-python compiled from source (it vendors
# llama.cpp; about 20 minutes on one core, once).
#
#   scripts/llama_cpp_venv.sh && cargo test --release --test llama_cpp -- --nocapture
#
# Not run by scripts/test.sh (CI's budget): scripts/stress.sh runs it. Where it cannot be built
# (no compiler, no network for pip) it says so and exits 1; the test then skips with a message.
#
# The venv reuses the project .venv's numpy and jinja2 (a .pth file, as scripts/bench/trl_venv.sh
# does), so pip adds only llama-cpp-python and diskcache. The compile uses all cores but one
# (LLAMA_CPP_JOBS overrides), so a machine shared with others stays usable.
#
# 0.3.36 is pinned: the llama.cpp it vendors is the one whose pre-tokenizer list
# (src/llama-vocab.cpp) src/gguf/tokenizer.rs checks names against.
LLAMA_CPP_PYTHON_VERSION=0.3.36

llama_cpp_venv() {
    local root venv base purelib log jobs
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="$root/target/llama-cpp/venv"
    base="$root/.venv/bin/python"
    log="$root/target/llama-cpp/build.log"
    # CPU only; no llava/mtmd library and no HTTPS client: the tests need neither. On x86-64,
    # AVX2 rather than -march=native: a CPU that reports AMX inside a virtual machine can fault
    # in ggml's AMX kernels (general protection fault in ggml_backend_amx_mul_mat, seen here).
    local cmake_args="-DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF"
    if [ "$(uname -m)" = x86_64 ]; then
        cmake_args="$cmake_args -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    fi
    local stamp="$LLAMA_CPP_PYTHON_VERSION $cmake_args"
    # The stamp is written only after pip succeeded, so an interrupted build is redone.
    [ "$(cat "$venv/.version" 2>/dev/null)" = "$stamp" ] && return 0
    skip() {
        echo "llama.cpp: cannot build llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION here ($1);" \
            "the llama.cpp tests skip. Log: $log" >&2
        return 1
    }
    [ -x "$base" ] || skip "no .venv: run scripts/setup.sh" || return 1
    command -v c++ >/dev/null || command -v g++ >/dev/null || skip "no C++ compiler" || return 1
    mkdir -p "$(dirname "$venv")"
    rm -rf "$venv"
    echo "llama.cpp: building llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION into $venv (once; ~20 min on one core)" >&2
    {
        "$base" -m venv "$venv" &&
            purelib=$("$base" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') &&
            "$venv/bin/python" -c 'import sys, sysconfig; open(sysconfig.get_paths()["purelib"] + "/project-venv.pth", "w").write(sys.argv[1] + "\n")' "$purelib"
    } >"$log" 2>&1 || skip "creating the venv failed" || return 1
    jobs="${LLAMA_CPP_JOBS:-$(($(nproc) > 1 ? $(nproc) - 1 : 1))}"
    # --no-cache-dir: pip would otherwise reuse a wheel built with other CMAKE_ARGS.
    CMAKE_BUILD_PARALLEL_LEVEL="$jobs" CMAKE_ARGS="$cmake_args" \
        "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --no-cache-dir \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >>"$log" 2>&1 ||
        skip "pip failed" || return 1
    "$venv/bin/python" -c 'import llama_cpp' >>"$log" 2>&1 || skip "it does not import" || return 1
    echo "$stamp" >"$venv/.version"
    echo "llama.cpp: ready ($venv)" >&2
}

# Executed rather than sourced: do it now.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    llama_cpp_venv
fi
