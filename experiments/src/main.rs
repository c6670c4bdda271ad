use clap::Parser;

// Burn allocates a fresh buffer for most ops; glibc's malloc returns large ones to the kernel and
// page-faults them back in every time (measured: 22 ms -> 14.5 ms per small Llama forward).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    flowlens_core::device::keep_freed_memory();
    let cli = flowlens_experiments::cli::Cli::parse();
    match flowlens_core::device::on_compute_pool(|| cli.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
