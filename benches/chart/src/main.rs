//! Draws the local-names table of `benches/compare.sh` as one SVG: queries/s per server (bars,
//! with each server's ratio to the floor) and its latency percentiles at half of its own peak
//! (p50/p90/p99/p99.9, from `dockns bench --json`). It only reads the JSON file compare.sh
//! writes and writes the SVG; it measures nothing and never talks to a server.
//!
//! Usage: dockns-bench-chart RESULTS.json OUT.svg

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

/// What compare.sh writes (`$WORK/results.json`).
#[derive(Deserialize)]
struct Results {
    /// One line under the title: the load, the rounds, the machine.
    subtitle: String,
    servers: Vec<Server>,
}

#[derive(Deserialize)]
struct Server {
    name: String,
    /// Median queries/s over the rounds (dnsperf).
    qps: f64,
    /// qps / the floor's qps.
    ratio_to_floor: f64,
    /// `latency_us` of `dockns bench --json` at half of this server's peak.
    latency_us: Latency,
}

#[derive(Deserialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
}

const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: dockns-bench-chart RESULTS.json OUT.svg");
        std::process::exit(2);
    }
    if let Err(e) = run(&args[1], &args[2]) {
        eprintln!("dockns-bench-chart: {e}");
        std::process::exit(1);
    }
}

fn run(input: &str, output: &str) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(input)
        .map_err(|e| format!("cannot read {input}: {e}; run benches/compare.sh first"))?;
    let r: Results =
        serde_json::from_str(&text).map_err(|e| format!("{input} is not compare.sh's JSON: {e}"))?;
    if r.servers.is_empty() {
        return Err(format!("{input} lists no server").into());
    }
    let root = SVGBackend::new(output, (1000, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(50);
    title.draw(&Text::new(
        "Local names over UDP: queries/s and latency per server",
        (10, 6),
        ("sans-serif", 20).into_font(),
    ))?;
    title.draw(&Text::new(
        r.subtitle.as_str(),
        (10, 30),
        ("sans-serif", 12).into_font().color(&BLACK.mix(0.7)),
    ))?;
    let (left, right) = body.split_horizontally(470);
    throughput(&left, &r.servers)?;
    latency(&right, &r.servers)?;
    root.present()?;
    Ok(())
}

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 6] = [
        RGBColor(120, 120, 120),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(214, 39, 40),
    ];
    C[i % C.len()]
}

/// Queries/s bars, one per server, labelled with the ratio to the floor.
fn throughput<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    servers: &[Server],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let n = servers.len();
    let top = servers.iter().map(|s| s.qps).fold(1.0, f64::max) * 1.15 / 1000.0;
    let mut chart = ChartBuilder::on(area)
        .caption("queries/s (thousands), median of rounds", ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => servers.get(*i).map(|s| s.name.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    for (i, s) in servers.iter().enumerate() {
        let k = s.qps / 1000.0;
        let mut bar = Rectangle::new(
            [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), k)],
            palette(i).filled(),
        );
        bar.set_margin(0, 0, 8, 8);
        chart.draw_series(std::iter::once(bar))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{:.0}k, {:.2}x floor", k, s.ratio_to_floor),
            (SegmentValue::CenterOf(i), k + top * 0.05),
            TextStyle::from(("sans-serif", 12).into_font())
                .pos(Pos::new(HPos::Center, VPos::Center)),
        )))?;
    }
    Ok(())
}

/// Latency percentiles: one group per percentile, one bar per server.
fn latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    servers: &[Server],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let vals = |s: &Server| {
        let l = &s.latency_us;
        [l.p50, l.p90, l.p99, l.p999]
    };
    // Percentiles span orders of magnitude on a loaded machine: a log axis keeps p50 visible.
    let top = servers
        .iter()
        .flat_map(|s| vals(s))
        .fold(10.0, f64::max)
        * 1.5;
    let bottom = servers
        .iter()
        .flat_map(|s| vals(s))
        .filter(|v| *v > 0.0)
        .fold(top, f64::min)
        .max(1.0)
        / 1.5;
    let n = servers.len();
    let slots = PERCENTILES.len() * (n + 1);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "latency µs (log scale) at half of each server's peak",
            ("sans-serif", 14),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0..slots, (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(slots)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_label_formatter(&|x| {
            if x % (n + 1) == n / 2 {
                PERCENTILES[x / (n + 1)].to_string()
            } else {
                String::new()
            }
        })
        .draw()?;
    for (i, s) in servers.iter().enumerate() {
        let c = palette(i);
        chart
            .draw_series(vals(s).iter().enumerate().map(|(p, v)| {
                let x = p * (n + 1) + i;
                Rectangle::new([(x, bottom), (x + 1, v.max(bottom))], c.filled())
            }))?
            .label(s.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK.mix(0.3))
        .background_style(WHITE.mix(0.9))
        .draw()?;
    Ok(())
}
