//! One PNG of a recording along its timeline (left to right, 0 to the end), rows from
//! top to bottom:
//!
//! - a strip of thumbnails per camera (one picture per stretch of time);
//! - the IMU's accelerometer, then its gyro (x red, y green, z blue), when there is an
//!   IMU track;
//! - each camera's frame intervals minus its usual interval (the jitter), when there is
//!   a camera: a flat line is a steady camera;
//!
//! and across all rows, gaps (frames or samples missing) as red bands and marks as
//! purple lines. No text: the table of `grabd inspect` names the numbers.
//!
//! Size: [`WIDTH`] px wide; [`MARGIN`] px around and between rows; a camera strip is
//! [`STRIP`] px high, each IMU trace [`TRACE`], the jitter row [`JITTER`].

use std::path::Path;

use plotters::prelude::*;

use super::report::{Inspection, StreamReport};
use super::thumbnails::{thumbnails, Thumbnail};
use super::Error;
use crate::recording::durable;

pub const WIDTH: u32 = 1280;
pub const MARGIN: u32 = 10;
pub const STRIP: u32 = 90;
pub const TRACE: u32 = 150;
pub const JITTER: u32 = 120;

const GAP: RGBColor = RGBColor(220, 30, 30);
const MARK: RGBColor = RGBColor(140, 40, 200);
const FRAME: RGBColor = RGBColor(190, 190, 190);
const AXES: [RGBColor; 3] = [
    RGBColor(210, 40, 40),
    RGBColor(30, 150, 40),
    RGBColor(40, 70, 210),
];

/// One row of the picture: its top edge and height.
#[derive(Clone, Copy)]
struct Row {
    top: u32,
    height: u32,
}

/// Where everything goes.
struct Layout {
    cameras: Vec<Row>,
    accel: Option<Row>,
    gyro: Option<Row>,
    jitter: Option<Row>,
    height: u32,
    /// The timeline, media seconds, mapped onto `MARGIN..WIDTH - MARGIN`.
    from_s: f64,
    to_s: f64,
}

impl Layout {
    fn new(report: &Inspection) -> Layout {
        let mut next = MARGIN;
        let mut row = |height| {
            let r = Row { top: next, height };
            next += height + MARGIN;
            r
        };
        let cameras: Vec<Row> = cameras(report).map(|_| row(STRIP)).collect();
        let has_imu = imu(report).is_some();
        let accel = has_imu.then(|| row(TRACE));
        let gyro = has_imu.then(|| row(TRACE));
        let jitter = (!cameras.is_empty()).then(|| row(JITTER));
        let starts = report.streams.iter().filter_map(|s| s.first_s);
        let ends = report.streams.iter().filter_map(|s| s.last_s);
        let from_s = starts.fold(0.0, f64::min);
        let to_s = ends.fold(report.duration_s, f64::max).max(from_s + 1e-3);
        Layout {
            cameras,
            accel,
            gyro,
            jitter,
            height: next,
            from_s,
            to_s,
        }
    }

    fn plot_width() -> u32 {
        WIDTH - 2 * MARGIN
    }

    fn x(&self, t_s: f64) -> i32 {
        let fraction = (t_s - self.from_s) / (self.to_s - self.from_s);
        (f64::from(MARGIN) + fraction.clamp(0.0, 1.0) * f64::from(Self::plot_width())) as i32
    }
}

fn cameras(report: &Inspection) -> impl Iterator<Item = &StreamReport> {
    report.streams.iter().filter(|s| s.is_camera())
}

/// The first IMU track with samples.
fn imu(report: &Inspection) -> Option<&super::report::ImuReport> {
    report
        .streams
        .iter()
        .filter_map(|s| s.imu.as_ref())
        .find(|i| !i.values.is_empty())
}

/// Draw the picture of `report` (read from its file again for the thumbnails) into
/// `out` as a PNG, durably.
pub fn draw(report: &Inspection, out: &Path) -> Result<(), Error> {
    let layout = Layout::new(report);
    let mut pixels = vec![255u8; (WIDTH * layout.height * 3) as usize];
    let failed = |e: &dyn std::fmt::Display| Error::Draw {
        path: out.to_owned(),
        reason: e.to_string(),
    };
    {
        let root =
            BitMapBackend::with_buffer(&mut pixels, (WIDTH, layout.height)).into_drawing_area();
        draw_traces(&root, &layout, report).map_err(|e| failed(&e))?;
        root.present().map_err(|e| failed(&e))?;
    }
    for (camera, row) in cameras(report).zip(&layout.cameras) {
        draw_strip(&mut pixels, &layout, *row, report, camera)?;
    }
    {
        let root =
            BitMapBackend::with_buffer(&mut pixels, (WIDTH, layout.height)).into_drawing_area();
        draw_gaps_and_marks(&root, &layout, report).map_err(|e| failed(&e))?;
        root.present().map_err(|e| failed(&e))?;
    }
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, WIDTH, layout.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| failed(&e))?;
        writer.write_image_data(&pixels).map_err(|e| failed(&e))?;
    }
    durable::write_file(out, &png)?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult =
    Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

/// The area of `row` across the timeline.
fn row_area<'a>(root: &Area<'a>, row: Row) -> Area<'a> {
    root.clone()
        .shrink((MARGIN, row.top), (Layout::plot_width(), row.height))
}

fn draw_traces(root: &Area<'_>, layout: &Layout, report: &Inspection) -> DrawResult {
    root.fill(&WHITE)?;
    if let (Some(imu), Some(accel), Some(gyro)) = (imu(report), layout.accel, layout.gyro) {
        let times: Vec<f64> = imu.values.iter().map(|s| s.t_us as f64 / 1e6).collect();
        let accel_xyz: Vec<[f32; 3]> = imu.values.iter().map(|s| s.accel).collect();
        let gyro_xyz: Vec<[f32; 3]> = imu.values.iter().map(|s| s.gyro).collect();
        draw_xyz(&row_area(root, accel), layout, &times, &accel_xyz)?;
        draw_xyz(&row_area(root, gyro), layout, &times, &gyro_xyz)?;
    }
    if let Some(row) = layout.jitter {
        let area = row_area(root, row);
        let series: Vec<Vec<(f64, f64)>> = cameras(report)
            .map(|camera| {
                let usual = camera.interval_ms.unwrap_or(0.0);
                camera
                    .pts_us
                    .windows(2)
                    .map(|w| {
                        let ms = (w[1] - w[0]) as f64 / 1000.0;
                        // A gap pins the line to the top; its band shows it.
                        (w[1] as f64 / 1e6, (ms - usual).clamp(-usual, usual))
                    })
                    .collect()
            })
            .collect();
        let widest = series
            .iter()
            .flatten()
            .map(|&(_, d)| d.abs())
            .fold(2.0, f64::max);
        let mut chart = ChartBuilder::on(&area)
            .build_cartesian_2d(layout.from_s..layout.to_s, -widest..widest)?;
        chart.draw_series(LineSeries::new(
            [(layout.from_s, 0.0), (layout.to_s, 0.0)],
            &FRAME,
        ))?;
        for (k, points) in series.into_iter().enumerate() {
            chart.draw_series(LineSeries::new(points, &AXES[k % AXES.len()]))?;
        }
        area.draw(&Rectangle::new(
            [
                (0, 0),
                (Layout::plot_width() as i32 - 1, row.height as i32 - 1),
            ],
            FRAME,
        ))?;
    }
    Ok(())
}

/// Three traces (x, y, z) over time in `area`, scaled to their own range.
fn draw_xyz(area: &Area<'_>, layout: &Layout, times: &[f64], xyz: &[[f32; 3]]) -> DrawResult {
    let values = xyz.iter().flatten().map(|&v| f64::from(v));
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((high - low) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .build_cartesian_2d(layout.from_s..layout.to_s, (low - pad)..(high + pad))?;
    for (axis, colour) in AXES.iter().enumerate() {
        let points = times.iter().zip(xyz).map(|(&t, v)| (t, f64::from(v[axis])));
        chart.draw_series(LineSeries::new(points, colour))?;
    }
    let (w, h) = area.dim_in_pixel();
    area.draw(&Rectangle::new(
        [(0, 0), (w as i32 - 1, h as i32 - 1)],
        FRAME,
    ))?;
    Ok(())
}

/// Thumbnails of `camera` tiling its strip: one per equal stretch of the timeline,
/// the frame at the stretch's middle, centred in it.
fn draw_strip(
    pixels: &mut [u8],
    layout: &Layout,
    row: Row,
    report: &Inspection,
    camera: &StreamReport,
) -> Result<(), Error> {
    let (Some(w), Some(h)) = (camera.width, camera.height) else {
        return Ok(());
    };
    let plot = Layout::plot_width();
    let thumb_h = row.height;
    let thumb_w =
        ((f64::from(thumb_h) * f64::from(w) / f64::from(h.max(1))).round() as u32).clamp(8, plot);
    let tiles = (plot / thumb_w).max(1);
    let tile_w = plot / tiles;
    let span = layout.to_s - layout.from_s;
    let times: Vec<i64> = (0..tiles)
        .map(|k| ((layout.from_s + span * (f64::from(k) + 0.5) / f64::from(tiles)) * 1e6) as i64)
        .collect();
    let shots = thumbnails(&report.file, camera.index, &times, thumb_w, thumb_h)?;
    for (k, shot) in shots.iter().enumerate() {
        if let Some(shot) = shot {
            let left = MARGIN + k as u32 * tile_w + (tile_w - thumb_w) / 2;
            blit(pixels, shot, left, row.top);
        }
    }
    Ok(())
}

/// Copy `shot` into the picture with its top-left corner at (`left`, `top`).
fn blit(pixels: &mut [u8], shot: &Thumbnail, left: u32, top: u32) {
    let row_bytes = (shot.width * 3) as usize;
    for y in 0..shot.height {
        let from = (y * shot.width * 3) as usize;
        let to = (((top + y) * WIDTH + left) * 3) as usize;
        if let (Some(dst), Some(src)) = (
            pixels.get_mut(to..to + row_bytes),
            shot.rgb.get(from..from + row_bytes),
        ) {
            dst.copy_from_slice(src);
        }
    }
}

/// Gaps as translucent red bands (at least 2 px wide) over the rows, marks as lines.
fn draw_gaps_and_marks(root: &Area<'_>, layout: &Layout, report: &Inspection) -> DrawResult {
    let bottom = layout.height.saturating_sub(MARGIN) as i32;
    let band = |at_s: f64, length_s: f64| {
        let (x0, x1) = (layout.x(at_s), layout.x(at_s + length_s));
        Rectangle::new(
            [(x0, MARGIN as i32), (x1.max(x0 + 2), bottom)],
            GAP.mix(0.3).filled(),
        )
    };
    for s in &report.streams {
        let imu_gaps = s.imu.iter().flat_map(|i| &i.gaps);
        for g in s.gaps.iter().chain(imu_gaps) {
            root.draw(&band(g.at_s, g.length_s))?;
        }
    }
    for &mark in &report.marks_s {
        let x = layout.x(mark);
        root.draw(&Rectangle::new(
            [(x, MARGIN as i32), (x + 1, bottom)],
            MARK.filled(),
        ))?;
    }
    Ok(())
}
