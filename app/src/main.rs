//! flowlens-lab, the desktop laboratory (egui). The window arrives with the app issue; until
//! then this binary says so instead of pretending, and points at what works today.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    eprintln!(
        "flowlens-lab {}: the desktop laboratory is not built yet.\n\
         What works today is the command line: `cargo run --release -- --help`.",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
