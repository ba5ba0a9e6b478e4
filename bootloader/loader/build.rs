//! Links the UEFI loader as a static position-independent ELF with our own linker script.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    // `-static-pie` keeps R_X86_64_RELATIVE relocations that the loader applies to itself at
    // entry (the firmware loads it at an address of its choosing); `-Bsymbolic` resolves every
    // symbol inside the image so there are no other relocation types.
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static-pie",
        "-Wl,--no-dynamic-linker",
        "-Wl,-Bsymbolic",
        "-Wl,--build-id=none",
        "-Wl,-z,norelro",
        "-Wl,-z,max-page-size=0x1000",
        "-Wl,--gc-sections",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/loader.ld");
    println!("cargo:rerun-if-changed=loader.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
