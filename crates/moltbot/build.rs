//! A `portable` build loads llama.cpp's shared libraries (libllama, libggml*) from the directory the
//! binary is in, so the release package runs from wherever it is unpacked.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_PORTABLE").is_some() {
        // DT_RPATH (not RUNPATH) so that the libraries' own dependencies (libggml-base) and the
        // dlopen()ed CPU backends resolve beside the binary too.
        println!("cargo:rustc-link-arg-bins=-Wl,--disable-new-dtags,-rpath,$ORIGIN");
    }
}
