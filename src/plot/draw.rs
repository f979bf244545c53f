//! Drawing the four panels with plotters into an in-memory RGB buffer and encoding it as PNG.
//! Text uses DejaVu Sans embedded in the binary (assets/fonts), so no system fonts are needed.

use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::read::Metrics;
use crate::error::{Error, Result};

const WIDTH: u32 = 1600;
const HEIGHT: u32 = 1100;
const FONT: &str = "sans-serif";
static DEJAVU: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse; a failure here is a build defect.
        if plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU).is_err() {
            panic!("the embedded DejaVu Sans does not parse");
        }
    });
}

fn err<E: std::fmt::Display>(e: E) -> Error {
    Error::Train(format!("drawing the plot: {e}"))
}

/// `[lo, hi]` padded by 5 % (and widened when flat) so lines do not sit on the frame.
fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad)..(hi + pad)
}

/// The PNG bytes of the four-panel chart for `m`.
pub fn draw(m: &Metrics, title: &str) -> Result<Vec<u8>> {
    register_font();
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let last = m.steps.last().expect("read() refuses empty metrics");
        let root = root
            .titled(
                &format!("{title}: {} steps, {} tokens", last.step, last.tokens),
                (FONT, 30),
            )
            .map_err(err)?;
        let panels = root.split_evenly((2, 2));
        loss_panel(&panels[0], m)?;
        lr_panel(&panels[1], m)?;
        speed_panel(&panels[2], m)?;
        load_panel(&panels[3], m)?;
        root.present().map_err(err)?;
    }
    encode_png(&buf)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn loss_panel(area: &Area, m: &Metrics) -> Result<()> {
    let train: Vec<(f64, f64)> = m
        .steps
        .iter()
        .filter_map(|s| Some((s.tokens as f64, s.loss.filter(|l| l.is_finite())?)))
        .collect();
    let val: Vec<(f64, f64)> = m
        .vals
        .iter()
        .filter_map(|v| Some((v.tokens as f64, v.val_loss.filter(|l| l.is_finite())?)))
        .collect();
    let x = range(train.iter().chain(&val).map(|p| p.0));
    let y = range(train.iter().chain(&val).map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption("loss vs tokens", (FONT, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("tokens")
        .y_desc("loss")
        .x_label_formatter(&|v| si(*v))
        .label_style((FONT, 15))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("train loss")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(val.clone(), RED.stroke_width(2)))
            .map_err(err)?
            .label("validation loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .draw_series(val.iter().map(|&p| Circle::new(p, 4, RED.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

fn lr_panel(area: &Area, m: &Metrics) -> Result<()> {
    let pts: Vec<(f64, f64)> = m.steps.iter().map(|s| (s.step as f64, s.lr)).collect();
    let mut chart = ChartBuilder::on(area)
        .caption("learning rate vs step", (FONT, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(range(pts.iter().map(|p| p.0)), range(pts.iter().map(|p| p.1)))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("lr")
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .label_style((FONT, 15))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(pts, GREEN.stroke_width(2)))
        .map_err(err)?;
    Ok(())
}

fn speed_panel(area: &Area, m: &Metrics) -> Result<()> {
    let pts: Vec<(f64, f64)> = m
        .steps
        .iter()
        .filter_map(|s| Some((s.step as f64, s.tokens_per_s.filter(|t| t.is_finite())?)))
        .collect();
    let mfu: Vec<f64> = m.steps.iter().filter_map(|s| s.mfu).collect();
    let caption = if mfu.is_empty() {
        "tokens/s vs step".to_string()
    } else {
        format!(
            "tokens/s vs step (mean MFU {:.1}%)",
            100.0 * mfu.iter().sum::<f64>() / mfu.len() as f64
        )
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            range(pts.iter().map(|p| p.0)),
            range(pts.iter().map(|p| p.1).chain([0.0])),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("tokens/s")
        .y_label_formatter(&|v| si(*v))
        .label_style((FONT, 15))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(pts, MAGENTA.stroke_width(2)))
        .map_err(err)?;
    Ok(())
}

/// Layers × experts, each cell the mean share of routed slots; white is the uniform share
/// 1/E, red more, blue less.
fn load_panel(area: &Area, m: &Metrics) -> Result<()> {
    let load = m.mean_expert_load();
    let (layers, experts) = (load.len(), load.first().map_or(0, Vec::len));
    let first = m.steps.first().map_or(0, |s| s.step);
    let last = m.steps.last().map_or(0, |s| s.step);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("expert load (share of routed slots), mean over steps {first}-{last}"),
            (FONT, 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..experts.max(1) as f64, 0.0..layers.max(1) as f64)
        .map_err(err)?;
    // Labels at cell centres (k + 0.5) only.
    let centre = |v: &f64| {
        let k = v - 0.5;
        if (k - k.round()).abs() < 1e-6 {
            format!("{}", k.round() as i64)
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("expert")
        .y_desc("layer")
        .x_labels(2 * experts.max(1) + 1)
        .y_labels(2 * layers.max(1) + 1)
        .x_label_formatter(&centre)
        .y_label_formatter(&centre)
        .label_style((FONT, 15))
        .draw()
        .map_err(err)?;
    if experts == 0 {
        return Ok(());
    }
    let uniform = 1.0 / experts as f64;
    let cells = || {
        load.iter()
            .enumerate()
            .flat_map(|(l, row)| row.iter().enumerate().map(move |(e, &v)| (e as f64, l as f64, v)))
    };
    chart
        .draw_series(
            cells().map(|(e, l, v)| Rectangle::new([(e, l), (e + 1.0, l + 1.0)], heat(v / uniform).filled())),
        )
        .map_err(err)?;
    let size = if experts * layers <= 64 { 16 } else { 11 };
    let style = (FONT, size)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    chart
        .draw_series(cells().map(|(e, l, v)| Text::new(format!("{v:.2}"), (e + 0.5, l + 0.5), style.clone())))
        .map_err(err)?;
    Ok(())
}

/// Diverging colour for `ratio` = load ÷ uniform load: 1 is white, 2+ full red, 0 full blue.
fn heat(ratio: f64) -> RGBColor {
    let t = (ratio - 1.0).clamp(-1.0, 1.0);
    let fade = |c: f64| (255.0 * (1.0 - c)).round() as u8;
    if t >= 0.0 {
        RGBColor(255, fade(t * 0.8), fade(t * 0.8))
    } else {
        RGBColor(fade(-t * 0.8), fade(-t * 0.8), 255)
    }
}

/// 12_500_000 → "12.5M".
fn si(v: f64) -> String {
    match v.abs() {
        a if a >= 1e9 => format!("{:.1}G", v / 1e9),
        a if a >= 1e6 => format!("{:.1}M", v / 1e6),
        a if a >= 1e3 => format!("{:.1}k", v / 1e3),
        _ => format!("{v:.0}"),
    }
}

fn encode_png(rgb: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(rgb).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_scale_is_white_at_uniform() {
        assert_eq!(heat(1.0), RGBColor(255, 255, 255));
        assert_eq!(heat(3.0), RGBColor(255, 51, 51));
        assert_eq!(heat(0.0), RGBColor(51, 51, 255));
        assert_eq!(si(12_500_000.0), "12.5M");
    }
}
