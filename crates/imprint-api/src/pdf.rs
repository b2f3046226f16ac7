//! The report as a PDF: printpdf (pure Rust, maintained), A4 landscape,
//! DejaVu Sans Mono embedded from this repository (no system or network
//! font; a monospaced face lets the same aligned tables as the terminal's
//! be drawn without a text layout engine). A header with the station/site,
//! filters and export time; the summary tables; bar charts of the failure
//! Pareto and of the yield per hour drawn with PDF rectangles and lines;
//! the device list; "page N of M" on every page.

use crate::reports::{table_lines, Report, TextTable};
use crate::{ApiError, ApiResult};
use printpdf::{
    Color, Line, LinePoint, Mm, Op, PaintMode, ParsedFont, PdfDocument, PdfFontHandle, PdfPage, PdfSaveOptions, Point, Pt, Rect, Rgb,
    TextItem, WindingOrder,
};

/// DejaVu Sans Mono (Bitstream Vera licence: assets/fonts/DejaVu-LICENSE.txt).
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSansMono.ttf");

const PAGE_W: f32 = 841.89; // A4 landscape, points
const PAGE_H: f32 = 595.28;
const MARGIN: f32 = 36.0;
const BODY: f32 = 8.0; // font size of tables
const ADVANCE: f32 = 0.602; // DejaVu Sans Mono advance width, em
const CHART_H: f32 = 150.0;

/// Characters of body text that fit on a line.
#[cfg(test)]
fn max_chars() -> usize {
    ((PAGE_W - 2.0 * MARGIN) / (BODY * ADVANCE)) as usize
}

/// A bar chart: labelled values.
#[derive(Clone, Debug, PartialEq)]
struct Chart {
    title: String,
    /// (label, value, text shown above the bar)
    bars: Vec<(String, f32, String)>,
    /// The value axis ends here (100 for percentages).
    max: f32,
}

#[derive(Clone, Debug, PartialEq)]
enum Block {
    /// One line of text at a size; `rule`: a line under it (a table's
    /// header); `table`: the table it belongs to (its header is repeated
    /// on the next page when the table goes on).
    Text {
        text: String,
        size: f32,
        rule: bool,
        table: Option<usize>,
        /// Drawn red (overproduction).
        red: bool,
    },
    Gap(f32),
    Chart(Chart),
}

impl Block {
    fn height(&self) -> f32 {
        match self {
            Block::Text { size, .. } => size * 1.4,
            Block::Gap(h) => *h,
            Block::Chart(_) => CHART_H + 30.0,
        }
    }
}

fn text(t: impl Into<String>, size: f32) -> Block {
    let mut t: String = t.into();
    let max = ((PAGE_W - 2.0 * MARGIN) / (size * ADVANCE)) as usize;
    if t.chars().count() > max {
        t = t.chars().take(max.saturating_sub(1)).collect::<String>() + "~";
    }
    Block::Text { text: t, size, rule: false, table: None, red: false }
}

fn table(t: &TextTable, out: &mut Vec<Block>) {
    let loud = t.title == crate::reports::OVERPRODUCTION_TITLE;
    let mut title = text(&t.title, 11.0);
    if let Block::Text { red, .. } = &mut title {
        *red = loud;
    }
    out.push(title);
    let id = out.len();
    for (i, l) in table_lines(t).into_iter().enumerate() {
        let mut b = text(l, BODY);
        if let Block::Text { rule, table, red, .. } = &mut b {
            *rule = i == 0;
            *table = Some(id);
            *red = loud;
        }
        out.push(b);
    }
    out.push(Block::Gap(8.0));
}

/// Everything on the pages, in order.
fn blocks(r: &Report, station: &str) -> Vec<Block> {
    let mut b = vec![
        text("Imprint provisioning report", 16.0),
        text(format!("Station / site: {station}    Source: {}", r.source), 10.0),
        text(format!("Filters: {}", r.filter_words), 10.0),
        text(format!("Exported at: {}    Attempts: {}", r.generated_at, r.total), 10.0),
        Block::Gap(10.0),
    ];
    let s = &r.summary;
    let tables = s.tables();
    if let Some(first) = tables.first() {
        table(first, &mut b);
    }
    if !s.pareto.is_empty() {
        b.push(Block::Chart(Chart {
            title: "Failure Pareto: failed attempts by stage and code".into(),
            max: s.pareto.iter().map(|p| p.count).max().unwrap_or(1).max(1) as f32,
            bars: s.pareto.iter().take(12).map(|p| (format!("{}/{}", p.stage, p.code), p.count as f32, p.count.to_string())).collect(),
        }));
    }
    if !s.per_hour.is_empty() {
        b.push(Block::Chart(Chart {
            title: "Yield over time: passed attempts per hour (UTC), percent".into(),
            max: 100.0,
            bars: s
                .per_hour
                .iter()
                .rev()
                .take(24)
                .rev()
                .map(|h| {
                    let y = if h.attempts > 0 { h.passed as f32 * 100.0 / h.attempts as f32 } else { 0.0 };
                    (h.key.get(5..).unwrap_or(&h.key).replace('T', " ") + "h", y, format!("{y:.0}%"))
                })
                .collect(),
        }));
    }
    for t in tables.iter().skip(1) {
        table(t, &mut b);
    }
    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows = r.page();
    let devices = TextTable {
        title: format!("Devices ({} of {} attempts)", rows.len(), r.total),
        header: ["started", "device", "status", "stage", "code", "work order", "operator", "station", "qa", "certificate", "dev CA"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rows: rows
            .iter()
            .map(|x| {
                vec![
                    x.started_at.clone(),
                    o(&x.device_serial),
                    x.status.clone(),
                    o(&x.stage),
                    o(&x.code),
                    o(&x.batch),
                    o(&x.operator),
                    x.station_id.clone(),
                    o(&x.qa_verdict),
                    o(&x.cert_serial),
                    match x.issuer.as_deref() {
                        Some(i) if crate::reports::is_dev_ca(i) => "yes".into(),
                        Some(_) => "no".into(),
                        None => "-".into(),
                    },
                ]
            })
            .collect(),
    };
    table(&devices, &mut b);
    b
}

/// Blocks split into pages (a chart or line never split).
fn paginate(blocks: Vec<Block>) -> Vec<Vec<Block>> {
    let top = PAGE_H - MARGIN - 14.0; // below the running header
    let bottom = MARGIN + 14.0; // above the page number
    let mut pages = vec![Vec::new()];
    let mut y = top;
    let mut header: Option<Block> = None;
    for b in blocks {
        let h = b.height();
        if let Block::Text { rule: true, .. } = &b {
            header = Some(b.clone());
        }
        if y - h < bottom && !pages.last().is_some_and(Vec::is_empty) {
            pages.push(Vec::new());
            y = top;
            // A table going on: its header first.
            if let (Block::Text { rule: false, table: Some(t), .. }, Some(hd @ Block::Text { table: Some(ht), .. })) = (&b, &header) {
                if t == ht {
                    y -= hd.height();
                    if let Some(p) = pages.last_mut() {
                        p.push(hd.clone());
                    }
                }
            }
        }
        y -= h;
        if let Some(p) = pages.last_mut() {
            p.push(b);
        }
    }
    pages
}

fn rgb(r: f32, g: f32, b: f32) -> Color {
    Color::Rgb(Rgb { r, g, b, icc_profile: None })
}

fn line(ops: &mut Vec<Op>, x1: f32, y1: f32, x2: f32, y2: f32) {
    ops.push(Op::DrawLine {
        line: Line {
            points: vec![
                LinePoint { p: Point { x: Pt(x1), y: Pt(y1) }, bezier: false },
                LinePoint { p: Point { x: Pt(x2), y: Pt(y2) }, bezier: false },
            ],
            is_closed: false,
        },
    });
}

fn show(ops: &mut Vec<Op>, font: &PdfFontHandle, s: &str, size: f32, x: f32, y: f32) {
    ops.extend([
        Op::StartTextSection,
        Op::SetFont { font: font.clone(), size: Pt(size) },
        Op::SetTextCursor { pos: Point { x: Pt(x), y: Pt(y) } },
        Op::ShowText { items: vec![TextItem::Text(s.to_string())] },
        Op::EndTextSection,
    ]);
}

fn chart(ops: &mut Vec<Op>, font: &PdfFontHandle, c: &Chart, top: f32) {
    show(ops, font, &c.title, 11.0, MARGIN, top - 11.0);
    let base = top - 20.0 - CHART_H; // the x axis
    let left = MARGIN + 30.0;
    let width = PAGE_W - MARGIN - left;
    ops.push(Op::SetOutlineColor { col: rgb(0.0, 0.0, 0.0) });
    ops.push(Op::SetOutlineThickness { pt: Pt(0.8) });
    line(ops, left, base, left + width, base);
    line(ops, left, base, left, base + CHART_H);
    // Scale: 0 and the maximum on the axis.
    show(ops, font, "0", 7.0, MARGIN, base - 2.0);
    show(ops, font, &format!("{}", c.max.round()), 7.0, MARGIN, base + CHART_H - 7.0);
    let n = c.bars.len().max(1) as f32;
    let slot = width / n;
    let bar_w = (slot * 0.6).min(60.0);
    let label_chars = ((slot - 2.0) / (6.0 * ADVANCE)).max(1.0) as usize;
    for (i, (label, value, shown)) in c.bars.iter().enumerate() {
        let x = left + slot * i as f32 + (slot - bar_w) / 2.0;
        let h = if c.max > 0.0 { (value / c.max).clamp(0.0, 1.0) * (CHART_H - 12.0) } else { 0.0 };
        ops.push(Op::SetFillColor { col: rgb(0.20, 0.42, 0.70) });
        ops.push(Op::DrawRectangle {
            rectangle: Rect {
                x: Pt(x),
                y: Pt(base),
                width: Pt(bar_w),
                height: Pt(h.max(0.5)),
                mode: Some(PaintMode::Fill),
                winding_order: Some(WindingOrder::NonZero),
            },
        });
        ops.push(Op::SetFillColor { col: rgb(0.0, 0.0, 0.0) });
        show(ops, font, shown, 7.0, x, base + h + 2.0);
        let l: String = label.chars().take(label_chars).collect();
        show(ops, font, &l, 6.0, left + slot * i as f32 + 1.0, base - 9.0);
    }
}

/// The report as PDF bytes; returns them with the page count.
pub fn report_pdf(r: &Report, station: &str) -> ApiResult<(Vec<u8>, usize)> {
    let mut warnings = Vec::new();
    let parsed =
        ParsedFont::from_bytes(FONT, 0, &mut warnings).ok_or_else(|| ApiError::internal("the embedded PDF font does not parse"))?;
    let mut doc = PdfDocument::new("Imprint provisioning report");
    let font = PdfFontHandle::External(doc.add_font(&parsed));
    let pages = paginate(blocks(r, station));
    let total = pages.len();
    let mut out = Vec::with_capacity(total);
    for (n, blocks) in pages.into_iter().enumerate() {
        let mut ops = Vec::new();
        ops.push(Op::SetFillColor { col: rgb(0.0, 0.0, 0.0) });
        let header = format!("Imprint report - {station} - {}", r.generated_at);
        show(&mut ops, &font, &header, 7.0, MARGIN, PAGE_H - MARGIN);
        let mut y = PAGE_H - MARGIN - 14.0;
        for b in &blocks {
            match b {
                Block::Text { text, size, rule, red, .. } => {
                    y -= b.height();
                    if *red {
                        ops.push(Op::SetFillColor { col: rgb(0.75, 0.0, 0.05) });
                    }
                    show(&mut ops, &font, text, *size, MARGIN, y + size * 0.35);
                    if *red {
                        ops.push(Op::SetFillColor { col: rgb(0.0, 0.0, 0.0) });
                    }
                    if *rule {
                        ops.push(Op::SetOutlineColor { col: rgb(0.0, 0.0, 0.0) });
                        ops.push(Op::SetOutlineThickness { pt: Pt(0.5) });
                        line(&mut ops, MARGIN, y, PAGE_W - MARGIN, y);
                    }
                }
                Block::Gap(h) => y -= h,
                Block::Chart(c) => {
                    chart(&mut ops, &font, c, y);
                    y -= b.height();
                }
            }
        }
        let footer = format!("page {} of {total}", n + 1);
        show(&mut ops, &font, &footer, 8.0, PAGE_W - MARGIN - footer.len() as f32 * 8.0 * ADVANCE, MARGIN - 10.0);
        out.push(PdfPage::new(Mm(297.0), Mm(210.0), ops));
    }
    let bytes = doc.with_pages(out).save(&PdfSaveOptions::default(), &mut Vec::new());
    Ok((bytes, total))
}

/// Write the report's PDF to a new 0600 file; returns the page count.
pub fn write_report_pdf(r: &Report, station: &str, path: &std::path::Path) -> ApiResult<usize> {
    use std::io::Write as _;
    let (bytes, pages) = report_pdf(r, station)?;
    let mut f = crate::reports::create_export_file(path)?;
    f.write_all(&bytes).and_then(|_| f.flush()).map_err(|e| ApiError::io(path.display(), e))?;
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_that_goes_on_to_the_next_page_repeats_its_header_there() {
        let t = TextTable {
            title: "Devices".into(),
            header: vec!["device".into(), "status".into()],
            rows: (0..120).map(|i| vec![format!("SN-{i}"), "passed".into()]).collect(),
        };
        let mut b = Vec::new();
        table(&t, &mut b);
        let pages = paginate(b);
        assert!(pages.len() >= 2);
        for p in &pages[1..] {
            assert!(matches!(&p[0], Block::Text { rule: true, text, .. } if text.starts_with("device")), "{:?}", p[0]);
        }
    }

    #[test]
    fn a_long_list_is_split_into_pages_and_no_line_is_wider_than_the_page() {
        let blocks: Vec<Block> = (0..200).map(|i| text(format!("line {i} {}", "x".repeat(300)), BODY)).collect();
        let pages = paginate(blocks);
        assert!(pages.len() >= 4, "{}", pages.len());
        for p in &pages {
            for b in p {
                if let Block::Text { text, .. } = b {
                    assert!(text.chars().count() <= max_chars(), "{text}");
                }
            }
        }
    }
}
