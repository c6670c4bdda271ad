//! `flowlens-lab [--runs DIR] [--screenshot FILE]`: the desktop laboratory. `flowlens-lab cli
//! ARGS...` runs the `flowlens` command line (the app launches its jobs that way).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use flowlens_app::LabApp;
use flowlens_app::app::Tab;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The flowlens desktop laboratory.
#[derive(Debug, Parser)]
#[command(name = "flowlens-lab", version)]
struct Args {
    /// The runs folder to open (run directories and experiment folders below it).
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Render the first frames of the main view with the runs loaded (headless, on the CPU),
    /// save them as a PNG and exit.
    #[arg(long)]
    screenshot: Option<PathBuf>,
    /// With --screenshot: which tab (runs, launch, dashboard, explorer, trajectory, sampling,
    /// results, study).
    #[arg(long, default_value = "explorer")]
    tab: String,
    /// With --screenshot: the run to select (a path below --runs).
    #[arg(long)]
    select: Option<PathBuf>,
    /// With --screenshot: window size in points, WIDTHxHEIGHT.
    #[arg(long, default_value = "1400x900")]
    size: String,
}

fn main() -> ExitCode {
    flowlens_core::device::keep_freed_memory();
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).is_some_and(|a| a == "cli") {
        let cli = flowlens_experiments::cli::Cli::parse_from(
            std::iter::once("flowlens".to_string()).chain(argv[2..].iter().cloned()),
        );
        return match flowlens_core::device::on_compute_pool(|| cli.run()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tab(app: &LabApp, name: &str) -> anyhow::Result<Tab> {
    app.tab_named(name).ok_or_else(|| {
        let names: Vec<&str> = Tab::ALL.iter().map(|t| app.panel(*t).name()).collect();
        anyhow::anyhow!("--tab: `{name}` is not one of {}", names.join(", "))
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(out) = &args.screenshot {
        let (w, h) = args
            .size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<f32>().ok()?, h.parse::<f32>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--size: `{}` is not WIDTHxHEIGHT", args.size))?;
        let mut app = LabApp::new(args.runs.clone());
        let tab = tab(&app, &args.tab)?;
        let select = args.select.clone().map(|p| {
            if p.is_absolute() {
                p
            } else {
                args.runs.join(p)
            }
        });
        let pixels = flowlens_app::render_headless(&mut app, w, h, 8, |app| {
            app.tab = tab;
            if let Some(p) = &select
                && app.lab.selected.as_ref() != Some(p)
                && app.lab.runs.iter().any(|r| &r.path == p)
            {
                app.select(p.clone());
            }
        });
        if let Some(e) = &app.lab.catalog_error {
            anyhow::bail!("{e}");
        }
        flowlens_app::save_png(&pixels, out)?;
        eprintln!(
            "saved {} ({}x{})",
            out.display(),
            pixels.width,
            pixels.height
        );
        return Ok(());
    }
    let root = args.runs.clone();
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("flowlens lab")
            .with_inner_size([1400.0, 900.0]),
        renderer: eframe::Renderer::Glow,
        ..Default::default()
    };
    eframe::run_native(
        "flowlens lab",
        options,
        Box::new(move |_cc| Ok(Box::new(Window(LabApp::new(root))))),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "opening the window: {e} (no display? `--screenshot FILE` renders without one)"
        )
    })
}

struct Window(LabApp);

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut eframe::egui::Ui, _frame: &mut eframe::Frame) {
        self.0.ui(ui);
    }
}
