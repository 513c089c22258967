//! The SVG chart beside the table: every figure of wsrelay, axum and copy_bidirectional as a
//! ratio to the best peer for that figure (the best of nginx, HAProxy and Caddy: the highest
//! where more is better, the lowest where less is), as horizontal bars from a line at 1.0 on a
//! log scale, with the side that beats the best peer shaded.
//!
//! Drawn with `plotters`' SVG backend alone: text is SVG `<text>` that the viewer renders, so
//! no font files or font libraries are needed (plotters only estimates its width).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::procs::Kind;
use crate::table::{Row, Table};

/// The columns drawn, top to bottom within a figure, and their colours.
const SUBJECTS: [(Kind, RGBColor); 3] = [
    (Kind::Wsrelay, RGBColor(31, 119, 180)),
    (Kind::Axum, RGBColor(230, 120, 20)),
    (Kind::Baseline, RGBColor(140, 140, 140)),
];
/// The peers whose best figure is the 1.0 of each row.
const PEERS: [Kind; 3] = [Kind::Nginx, Kind::Haproxy, Kind::Caddy];
/// Ratios beyond these are drawn at the edge (their value is still written).
const CLAMP: (f64, f64) = (1.0 / 64.0, 64.0);

const WIDTH: u32 = 1400;
/// Pixels per bar; a figure is one bar per subject plus [`GAP`] bars of room.
const BAR: f64 = 17.0;
const GAP: f64 = 1.6;
const TOP: u32 = 96;
const BOTTOM: u32 = 56;
const LABELS: u32 = 560;

/// One row of the chart.
struct Figure {
    row: Row,
    higher_is_better: bool,
    best: (Kind, f64),
    /// Per subject drawn: its ratio to the best peer, if it has a figure.
    ratios: Vec<Option<f64>>,
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The figures that can be drawn: a quantity (not a check, not a figure derived from another
/// row) for which at least one peer has a positive value.
fn figures(table: &Table, subjects: &[Kind]) -> Vec<Figure> {
    let mut out = Vec::new();
    for row in Row::ORDER {
        if !row.ratio_makes_sense() || matches!(row, Row::RttP50Over | Row::RttP99Over) {
            continue;
        }
        let Some(higher_is_better) = row.higher_is_better() else {
            continue;
        };
        let peers = PEERS.iter().filter_map(|&kind| {
            let value = table.value(table.column(kind)?, row)?;
            (value > 0.0).then_some((kind, value))
        });
        let best = if higher_is_better {
            peers.max_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            peers.min_by(|a, b| a.1.total_cmp(&b.1))
        };
        let Some(best) = best else {
            continue;
        };
        let ratios: Vec<Option<f64>> = subjects
            .iter()
            .map(|&kind| {
                let value = table.value(table.column(kind)?, row)?;
                (value > 0.0).then_some(value / best.1)
            })
            .collect();
        out.push(Figure {
            row,
            higher_is_better,
            best,
            ratios,
        });
    }
    out
}

/// Writes the chart of `table` to `path`.
pub fn write_svg(table: &Table, title: &str, path: &Path) -> Result<(), String> {
    let subjects: Vec<(Kind, RGBColor)> = SUBJECTS
        .into_iter()
        .filter(|(kind, _)| table.columns.iter().any(|c| c.kind == *kind))
        .collect();
    let kinds: Vec<Kind> = subjects.iter().map(|(kind, _)| *kind).collect();
    let figures = figures(table, &kinds);
    if subjects.is_empty() || figures.is_empty() {
        return Err("no figure of wsrelay, axum or copy_bidirectional next to a peer's".into());
    }
    let band = subjects.len() as f64 + GAP;
    let total = band * figures.len() as f64;
    let height = TOP + BOTTOM + (total * BAR).round() as u32;

    let ratios = figures.iter().flat_map(|f| f.ratios.iter().flatten());
    let (lo, hi) = ratios.fold((1.0f64, 1.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let lo = (lo / 1.5).clamp(CLAMP.0, 0.5);
    let hi = (hi * 1.5).clamp(2.0, CLAMP.1);

    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(err)?;

    let left = |size: u32, color: RGBColor| {
        ("sans-serif", size)
            .into_font()
            .color(&color)
            .pos(Pos::new(HPos::Left, VPos::Center))
    };
    let dark = RGBColor(30, 30, 30);
    let grey = RGBColor(100, 100, 100);
    root.draw(&Text::new(title.to_string(), (16, 18), left(20, dark)))
        .map_err(err)?;
    root.draw(&Text::new(
        "Each figure as value ÷ the best of nginx, HAProxy and Caddy for it (log scale). \
         The shaded side of 1.0 beats the best peer."
            .to_string(),
        (16, 42),
        left(15, grey),
    ))
    .map_err(err)?;
    // Legend.
    let mut x = 16;
    for (kind, color) in &subjects {
        root.draw(&Rectangle::new([(x, 60), (x + 14, 74)], color.filled()))
            .map_err(err)?;
        root.draw(&Text::new(kind.label(), (x + 20, 67), left(15, dark)))
            .map_err(err)?;
        x += 40 + 9 * kind.label().len() as i32;
    }

    let mut chart = ChartBuilder::on(&root)
        .margin_top(TOP)
        .margin_right(40)
        .x_label_area_size(BOTTOM)
        .y_label_area_size(LABELS)
        .build_cartesian_2d((lo..hi).log_scale().base(2.0), 0f64..total)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(16)
        .x_label_formatter(&|v| format!("{v}×"))
        .x_desc("ratio to the best peer (log scale)")
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 14))
        .max_light_lines(1)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;

    let better = RGBColor(218, 242, 218);
    let separator = RGBColor(210, 210, 210);
    for (i, figure) in figures.iter().enumerate() {
        let top = total - band * i as f64;
        let bottom = top - band;
        let (from, to) = if figure.higher_is_better {
            (1.0, hi)
        } else {
            (lo, 1.0)
        };
        chart
            .draw_series([Rectangle::new(
                [(from, bottom), (to, top)],
                better.mix(0.8).filled(),
            )])
            .map_err(err)?;
        chart
            .draw_series([PathElement::new([(lo, bottom), (hi, bottom)], separator)])
            .map_err(err)?;
        // The figure's name and its best peer, right-aligned left of the plot.
        let (px, py) = chart.backend_coord(&(lo, top - band / 2.0));
        let right = |size: u32, color: RGBColor, dy: i32| {
            (
                ("sans-serif", size)
                    .into_font()
                    .color(&color)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
                (px - 10, py + dy),
            )
        };
        let (style, at) = right(15, dark, -8);
        root.draw(&Text::new(figure.row.label(), at, style))
            .map_err(err)?;
        let (kind, value) = figure.best;
        let note = format!(
            "best peer: {} {} {} · {} is better",
            kind.label(),
            figure.row.format_value(value),
            figure.row.unit(),
            if figure.higher_is_better {
                "higher"
            } else {
                "lower"
            }
        );
        let (style, at) = right(13, grey, 9);
        root.draw(&Text::new(note, at, style)).map_err(err)?;
        // One bar per subject, from 1.0 to its ratio.
        for (j, ((_, color), ratio)) in subjects.iter().zip(&figure.ratios).enumerate() {
            let bar_top = top - GAP / 2.0 - j as f64;
            let (y0, y1) = (bar_top - 0.85, bar_top - 0.15);
            let mid = (y0 + y1) / 2.0;
            let Some(ratio) = *ratio else {
                let (tx, ty) = chart.backend_coord(&(1.0, mid));
                root.draw(&Text::new("no figure", (tx + 6, ty), left(13, grey)))
                    .map_err(err)?;
                continue;
            };
            let shown = ratio.clamp(lo, hi);
            chart
                .draw_series([Rectangle::new(
                    [(1.0f64.min(shown), y0), (1.0f64.max(shown), y1)],
                    color.filled(),
                )])
                .map_err(err)?;
            let (tx, ty) = chart.backend_coord(&(shown, mid));
            let text = format!("{ratio:.2}×");
            let anchor = if shown >= 1.0 {
                HPos::Left
            } else {
                HPos::Right
            };
            let dx = if shown >= 1.0 { 5 } else { -5 };
            let style = ("sans-serif", 13)
                .into_font()
                .color(&dark)
                .pos(Pos::new(anchor, VPos::Center));
            root.draw(&Text::new(text, (tx + dx, ty), style))
                .map_err(err)?;
        }
    }
    // The line at 1.0, over everything.
    chart
        .draw_series([PathElement::new(
            [(1.0, 0.0), (1.0, total)],
            BLACK.stroke_width(2),
        )])
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
