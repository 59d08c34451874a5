//! Bakes LibTorch's library directory into the binary (RUNPATH), so `target/release/rlhf`
//! runs with no environment variables. torch-sys exports the directory it linked against
//! as DEP_TCH_LIBTORCH_LIB to its direct dependents.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
