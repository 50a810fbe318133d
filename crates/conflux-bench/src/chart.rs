//! The PNG chart of a run: throughput (MB/s) and end-to-end / publish p99 latency per second.
//!
//! Text needs a font; plotters' ab_glyph backend takes one from memory, so a system TrueType
//! font is loaded once if one is found. Without a font the chart is drawn without labels.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::report::Report;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system font as "sans-serif" once; true when one is available.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for path in FONT_CANDIDATES {
            if let Ok(bytes) = std::fs::read(path) {
                // Registered fonts must live for the whole process; this happens once.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws `report`'s time series into a 1200x800 PNG at `path`.
pub fn draw(report: &Report, path: &Path) -> DrawResult {
    let labels = font_available();
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    let samples = &report.samples;
    let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1.0);

    let mb_max = samples
        .iter()
        .map(|s| s.rates.publish_mb_per_s.max(s.rates.consume_mb_per_s))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&top);
    chart.margin(15);
    if labels {
        chart
            .caption(
                format!("{}: throughput", report.workload.name),
                ("sans-serif", 22),
            )
            .x_label_area_size(35)
            .y_label_area_size(60);
    }
    let mut chart = chart.build_cartesian_2d(0.0..t_max, 0.0..mb_max)?;
    if labels {
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("MB/s")
            .draw()?;
    }
    let series = [
        (
            "publish MB/s",
            BLUE,
            samples
                .iter()
                .map(|s| (s.t_s, s.rates.publish_mb_per_s))
                .collect::<Vec<_>>(),
        ),
        (
            "consume MB/s",
            GREEN,
            samples
                .iter()
                .map(|s| (s.t_s, s.rates.consume_mb_per_s))
                .collect(),
        ),
    ];
    for (name, color, points) in series {
        let drawn = chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
        if labels {
            drawn
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    if labels {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }

    let ms_max = samples
        .iter()
        .map(|s| s.end_to_end.p99_ms.max(s.publish.p99_ms))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom);
    chart.margin(15);
    if labels {
        chart
            .caption("latency per second", ("sans-serif", 22))
            .x_label_area_size(35)
            .y_label_area_size(60);
    }
    let mut chart = chart.build_cartesian_2d(0.0..t_max, 0.0..ms_max)?;
    if labels {
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("ms")
            .draw()?;
    }
    let series = [
        (
            "publish p99",
            BLUE,
            samples
                .iter()
                .map(|s| (s.t_s, s.publish.p99_ms))
                .collect::<Vec<_>>(),
        ),
        (
            "end-to-end p50",
            MAGENTA,
            samples
                .iter()
                .map(|s| (s.t_s, s.end_to_end.p50_ms))
                .collect(),
        ),
        (
            "end-to-end p99",
            RED,
            samples
                .iter()
                .map(|s| (s.t_s, s.end_to_end.p99_ms))
                .collect(),
        ),
    ];
    for (name, color, points) in series {
        let drawn = chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
        if labels {
            drawn
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    if labels {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
