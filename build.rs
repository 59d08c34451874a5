//! Bakes LibTorch's library directory into the binary (RUNPATH), so `target/release/rlhf`
//! runs with no environment variables, and compiles the C++ that calls LibTorch directly —
//! the c10d shim (src/dist/c10d_shim.cpp), the fused kernels tch lacks (src/model/fused.cpp)
//! and the Llama decoding step (src/model/llama_step.cpp) — against that LibTorch's headers.
//! torch-sys exports the directory it linked against as DEP_TCH_LIBTORCH_LIB to its direct
//! dependents.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-changed=src/dist/c10d_shim.cpp");
    println!("cargo:rerun-if-changed=src/dist/gloo_decls");
    println!("cargo:rerun-if-changed=src/model/fused.cpp");
    println!("cargo:rerun-if-changed=src/model/llama_step.cpp");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys names LibTorch's lib directory"),
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let include = lib.parent().expect("LibTorch's lib directory has a parent").join("include");
    let shim = |nccl: Option<&[PathBuf]>| {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .file("src/dist/c10d_shim.cpp")
            // Declarations of the Gloo types c10d's header names (the wheel ships no Gloo
            // headers); must come before any real Gloo headers on the system.
            .include("src/dist/gloo_decls")
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .flag("-std=c++17")
            // PyTorch ≥ 2.7 is built with the C++11 ABI only.
            .define("_GLIBCXX_USE_CXX11_ABI", "1")
            .define("GLOG_USE_GLOG_EXPORT", None)
            .define("USE_C10D_GLOO", None)
            .warnings(false);
        if let Some(cuda) = nccl {
            build.includes(cuda).define("USE_C10D_NCCL", None).define("RLHF_WITH_NCCL", None);
        }
        build.try_compile("rlhf_c10d")
    };
    match cuda_includes(&lib).map(|dirs| shim(Some(&dirs))) {
        Some(Ok(())) => println!("cargo:rustc-link-lib=dylib=torch_cuda"),
        built_with_nccl => {
            if let Some(Err(e)) = built_with_nccl {
                println!("cargo:warning=c10d shim: NCCL left out ({e}); Gloo only");
            }
            shim(None).expect("the c10d shim compiles against LibTorch's headers");
        }
    }
    // `at::parallel_for` is inline: its loop runs under `#pragma omp parallel`, on one thread
    // unless this C++ is compiled with OpenMP. Linked against LibTorch's own libgomp, so one
    // thread pool serves LibTorch's kernels and ours.
    let gomp = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries.flatten().map(|e| e.path()).find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("libgomp") && name.contains(".so")
        })
    });
    let mut fused = cc::Build::new();
    fused
        .cpp(true)
        .file("src/model/fused.cpp")
        .file("src/model/llama_step.cpp")
        .include(&include)
        .flag("-std=c++17")
        // The GELU loops must vectorise in every profile (src/model/fused.cpp).
        .opt_level(3)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false);
    if gomp.is_some() {
        fused.flag("-fopenmp");
    }
    fused.try_compile("rlhf_fused").expect("the fused kernels compile against LibTorch's headers");
    if let Some(gomp) = gomp {
        println!("cargo:rustc-link-arg={}", gomp.display());
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// The CUDA and NCCL headers ProcessGroupNCCL.hpp needs, when LibTorch has CUDA: from
/// `CUDA_HOME` (plus the NCCL wheel), or all from the PyPI wheels beside a pip-installed torch.
fn cuda_includes(lib: &Path) -> Option<Vec<PathBuf>> {
    if !lib.join("libtorch_cuda.so").exists() {
        return None;
    }
    let site = lib.parent()?.parent()?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(home) = std::env::var("CUDA_HOME") {
        dirs.push(Path::new(&home).join("include"));
    }
    if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
        let mut wheels: Vec<PathBuf> =
            entries.flatten().map(|e| e.path().join("include")).collect();
        wheels.sort();
        dirs.extend(wheels.into_iter().filter(|d| d.is_dir()));
    }
    // The CUDA runtime wheel lacks crt/; Triton (a torch dependency) ships it.
    dirs.push(site.join("triton/backends/nvidia/include"));
    let found = |file: &str| dirs.iter().any(|d| d.join(file).exists());
    let needed = ["nccl.h", "cuda_runtime_api.h", "crt/host_config.h", "nv/target", "cusparse.h"];
    needed.iter().all(|f| found(f)).then_some(dirs)
}
