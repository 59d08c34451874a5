//! PNG drawing: plotters' bitmap backend with the text set by ab_glyph here.
//!
//! plotters 0.3.7 draws ab_glyph text without each glyph's left side bearing, so digits drift
//! apart ("1e-3" comes out as "1 e-3"). This backend passes everything to `BitMapBackend`
//! except text, which it lays out from the same font with the bearings where they belong.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

type Error = DrawingErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;

pub struct Raster<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

impl<'a> Raster<'a> {
    /// Draws into `rgb` (width × height × 3 bytes) with text in `font` (a TrueType file).
    pub fn new(rgb: &'a mut [u8], size: (u32, u32), font: &'static [u8]) -> anyhow::Result<Self> {
        let font = FontRef::try_from_slice(font)?;
        Ok(Self { inner: BitMapBackend::with_buffer(rgb, size), font })
    }
}

impl DrawingBackend for Raster<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), Error> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), Error> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), Error> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), Error> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), Error> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    /// A thick path as a square brush of the stroke width dragged along it: plotters fills a
    /// polygon around the path instead, which rasterises 1 to 3 pixels wide depending on the
    /// slope, so one curve looked thick in one place and hairline in the next.
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), Error> {
        let width = style.stroke_width() as i32;
        if width <= 1 {
            return self.inner.draw_path(path, style);
        }
        let points: Vec<BackendCoord> = path.into_iter().collect();
        let pen = Pen(style.color());
        let offsets = -(width - 1) / 2..=width / 2;
        for ox in offsets.clone() {
            for oy in offsets.clone() {
                for pair in points.windows(2) {
                    let (from, to) = (pair[0], pair[1]);
                    self.inner.draw_line(
                        (from.0 + ox, from.1 + oy),
                        (to.0 + ox, to.1 + oy),
                        &pen,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), Error> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), Error> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), Error> {
        self.inner.blit_bitmap(pos, size, src)
    }

    /// Lays the glyphs out along a baseline (advances and kerning, as plotters measures the
    /// text), anchors the line's box as the style asks, rotates it, and blends each glyph's
    /// coverage into the bitmap.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), Error> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        // plotters sizes ab_glyph text by this scale; keep it, so its layout estimates hold.
        let font = self.font.as_scaled(PxScale::from(style.size() as f32));
        let mut caret = 0.0f32;
        let mut glyphs = Vec::new();
        let mut previous = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(previous) = previous {
                caret += font.kern(previous, id);
            }
            glyphs.push(id.with_scale_and_position(font.scale(), point(caret, font.ascent())));
            caret += font.h_advance(id);
            previous = Some(id);
        }
        let (width, height) = (caret.round() as i32, font.height().round() as i32);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Center => -width / 2,
            HPos::Right => -width,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        for glyph in glyphs {
            let Some(outline) = self.font.outline_glyph(glyph) else { continue };
            let bounds = outline.px_bounds();
            let mut pixels = Vec::new();
            outline.draw(|x, y, coverage| {
                let x = bounds.min.x as i32 + x as i32 + dx;
                let y = bounds.min.y as i32 + y as i32 + dy;
                pixels.push((transform.transform(x, y), coverage));
            });
            for ((x, y), coverage) in pixels {
                let shade =
                    BackendColor { alpha: color.alpha * f64::from(coverage), rgb: color.rgb };
                self.inner.draw_pixel((pos.0 + x, pos.1 + y), shade)?;
            }
        }
        Ok(())
    }
}

/// A one-pixel line in a colour.
struct Pen(BackendColor);

impl BackendStyle for Pen {
    fn color(&self) -> BackendColor {
        self.0
    }

    fn stroke_width(&self) -> u32 {
        1
    }
}
