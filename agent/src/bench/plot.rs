//! `copyscope bench --plot FILE`: two bar charts side by side, throughput and the sender's
//! CPU per GiB for each method, one bar per cache state. SVG or PNG by the file's name;
//! text is drawn with a TrueType font found on the system (ab_glyph, no C libraries).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{Method, summary::Report};

/// Where a TrueType font usually is (Debian, Fedora, Arch; DejaVu, then Liberation).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

enum Kind {
    Svg,
    Png,
}

fn kind(path: &Path) -> Result<Kind> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
    {
        Some(e) if e == "svg" => Ok(Kind::Svg),
        Some(e) if e == "png" => Ok(Kind::Png),
        _ => bail!("--plot {}: name the file .svg or .png", path.display()),
    }
}

/// Fail before the benchmark runs, not after: the name, the directory and a font.
pub fn check_path(path: &Path) -> Result<()> {
    kind(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "--plot {}: {} is not a directory",
            path.display(),
            dir.display()
        );
    }
    font()?;
    Ok(())
}

/// A TrueType font: COPYSCOPE_FONT, else the first of [`FONTS`] that exists.
fn font() -> Result<&'static [u8]> {
    static FONT: std::sync::OnceLock<Result<&'static [u8], String>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        let from_env = std::env::var_os("COPYSCOPE_FONT").map(std::path::PathBuf::from);
        let path = from_env
            .clone()
            .or_else(|| {
                FONTS
                    .iter()
                    .map(std::path::PathBuf::from)
                    .find(|p| p.exists())
            })
            .ok_or_else(|| {
                "drawing the plot needs a TrueType font: install fonts-dejavu-core (Debian) \
                 or set COPYSCOPE_FONT to a .ttf file"
                    .to_string()
            })?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType font", path.display()))?;
        Ok(bytes)
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

pub fn draw(report: &Report, path: &Path) -> Result<()> {
    font()?;
    let size = (1200, 520);
    match kind(path)? {
        Kind::Svg => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            charts(report, &root)?;
            root.present().map_err(|e| anyhow!("{e}"))
        }
        Kind::Png => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            charts(report, &root)?;
            root.present().map_err(|e| anyhow!("{e}"))
        }
    }
    .with_context(|| format!("writing {}", path.display()))
}

fn charts<DB: DrawingBackend>(report: &Report, root: &DrawingArea<DB, Shift>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let s = &report.setup;
    let title = format!(
        "copyscope bench: {} per transfer, kernel {}, median of {}",
        crate::units::bytes_with(s.size, crate::units::Decimals::One),
        s.kernel,
        s.runs
    );
    let root = root
        .titled(&title, ("sans-serif", 22))
        .map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(600);
    bars(report, &left, "Throughput (MB/s, higher is better)", |l| {
        l.bytes_per_second / 1e6
    })?;
    bars(
        report,
        &right,
        "Sender CPU (seconds per GiB, lower is better)",
        |l| l.cpu_seconds_per_gib,
    )?;
    Ok(())
}

fn bars<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    value: impl Fn(&super::summary::Line) -> f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut methods: Vec<Method> = Vec::new();
    let mut caches: Vec<String> = Vec::new();
    for l in &report.lines {
        if !methods.contains(&l.method) {
            methods.push(l.method);
        }
        if !caches.contains(&l.cache) {
            caches.push(l.cache.clone());
        }
    }
    let max = report
        .lines
        .iter()
        .map(&value)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let n = methods.len();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..max)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            // Only the centre of each group is labelled.
            let i = x.floor() as usize;
            if (x - (i as f64 + 0.5)).abs() < 0.01 && i < methods.len() {
                methods[i].name().to_string()
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let colours = [RGBColor(0x4c, 0x72, 0xb0), RGBColor(0xdd, 0x84, 0x52)];
    let width = 0.8 / caches.len() as f64;
    for (ci, cache) in caches.iter().enumerate() {
        let colour = colours[ci % colours.len()];
        let rects: Vec<Rectangle<(f64, f64)>> = methods
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let l = report.line(cache, *m)?;
                let x0 = i as f64 + 0.1 + ci as f64 * width;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.92, value(l))],
                    colour.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{cache} cache"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], colour.filled()));
        // The value above each bar.
        let labels: Vec<Text<'_, (f64, f64), String>> = methods
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let l = report.line(cache, *m)?;
                let x0 = i as f64 + 0.1 + ci as f64 * width;
                let v = value(l);
                Some(Text::new(
                    if v >= 100.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.2}")
                    },
                    (x0 + width * 0.46, v + max * 0.01),
                    TextStyle::from(("sans-serif", 11).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                ))
            })
            .collect();
        chart.draw_series(labels).map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
