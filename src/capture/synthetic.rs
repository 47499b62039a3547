//! Built-in synthetic cameras, so grabd runs on any laptop: an RGB test pattern with a
//! moving square and the frame number burned in, and a 16-bit depth ramp. Frames are
//! paced in real time and stamped when they are "captured".

use super::{CaptureError, FrameSource};
use crate::clock::Pacer;
use crate::recording::Frame;
use std::sync::Arc;

/// What a synthetic camera draws; chosen from the stream's input pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticPattern {
    /// rgb24 colour bars with a moving square and the frame number.
    Rgb,
    /// gray16le depth in millimetres: a ramp with a moving near object.
    Depth,
    /// yuyv422 (what USB cameras send): grey ramp with a moving square.
    Yuyv,
}

impl SyntheticPattern {
    pub fn for_pixel_format(format: &str) -> Option<Self> {
        match format {
            "rgb24" => Some(Self::Rgb),
            "gray16le" => Some(Self::Depth),
            "yuyv422" => Some(Self::Yuyv),
            _ => None,
        }
    }

    fn bytes_per_pixel(self) -> usize {
        match self {
            Self::Rgb => 3,
            Self::Depth | Self::Yuyv => 2,
        }
    }
}

/// A real-time synthetic camera.
pub struct SyntheticVideo {
    pattern: SyntheticPattern,
    width: usize,
    height: usize,
    pacer: Pacer,
    background: Vec<u8>,
    frame_number: u64,
    /// The frame handed out last. Once its consumer has let go of it, the next frame is
    /// drawn into it: no allocation and no fresh pages per frame, which on a slow board
    /// cost more than the drawing (a 320x200 rgb source took a quarter of a TCG guest's
    /// 25 % CPU share while it allocated and copied every frame twice).
    last: Option<Arc<[u8]>>,
}

impl SyntheticVideo {
    pub fn new(pattern: SyntheticPattern, width: u32, height: u32, fps: f64) -> Self {
        let (width, height) = (width as usize, height as usize);
        let mut source = SyntheticVideo {
            pattern,
            width,
            height,
            pacer: Pacer::new(fps),
            background: Vec::new(),
            frame_number: 0,
            last: None,
        };
        source.background = source.draw_background();
        source
    }

    fn draw_background(&self) -> Vec<u8> {
        let (w, h) = (self.width, self.height);
        let mut buf = vec![0u8; w * h * self.pattern.bytes_per_pixel()];
        const BARS: [[u8; 3]; 8] = [
            [235, 235, 235],
            [235, 235, 16],
            [16, 235, 235],
            [16, 235, 16],
            [235, 16, 235],
            [235, 16, 16],
            [16, 16, 235],
            [16, 16, 16],
        ];
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                match self.pattern {
                    SyntheticPattern::Rgb => {
                        buf[i * 3..i * 3 + 3].copy_from_slice(&BARS[x * 8 / w]);
                    }
                    SyntheticPattern::Depth => {
                        // 0.5 m at the top to 4.5 m at the bottom.
                        let mm = 500 + (y * 4000 / h.max(1)) as u16;
                        buf[i * 2..i * 2 + 2].copy_from_slice(&mm.to_le_bytes());
                    }
                    SyntheticPattern::Yuyv => {
                        buf[i * 2] = (16 + x * 219 / w.max(1)) as u8;
                        buf[i * 2 + 1] = 128;
                    }
                }
            }
        }
        buf
    }

    /// Draw frame `n` (the moving square and, for RGB, the frame number).
    pub fn render(&self, n: u64) -> Vec<u8> {
        let mut buf = vec![0; self.background.len()];
        self.draw(&mut buf, n);
        buf
    }

    /// Draw frame `n` over the whole of `buf`, which holds one frame.
    fn draw(&self, buf: &mut [u8], n: u64) {
        buf.copy_from_slice(&self.background);
        let (w, h) = (self.width, self.height);
        let side = (h / 8).max(2).min(w);
        let travel = (w - side).max(1);
        let x0 = (n as usize * 4) % travel;
        let y0 = (h - side) / 2;
        for y in y0..y0 + side {
            for x in x0..x0 + side {
                self.put(buf, x, y, [255, 128, 0], 800);
            }
        }
        if self.pattern == SyntheticPattern::Rgb {
            self.draw_number(buf, n);
        }
    }

    /// Frame `n` in a buffer of its own: the last one handed out when nobody holds it
    /// any more, else a copy.
    fn next_buffer(&mut self, n: u64) -> Arc<[u8]> {
        let mut data = self
            .last
            .take()
            .unwrap_or_else(|| Arc::from(self.background.as_slice()));
        self.draw(Arc::make_mut(&mut data), n);
        self.last = Some(Arc::clone(&data));
        data
    }

    fn put(&self, buf: &mut [u8], x: usize, y: usize, rgb: [u8; 3], depth_mm: u16) {
        let i = y * self.width + x;
        match self.pattern {
            SyntheticPattern::Rgb => buf[i * 3..i * 3 + 3].copy_from_slice(&rgb),
            SyntheticPattern::Depth => {
                buf[i * 2..i * 2 + 2].copy_from_slice(&depth_mm.to_le_bytes())
            }
            SyntheticPattern::Yuyv => buf[i * 2] = 235,
        }
    }

    /// The frame number in 3x5 digits, scaled up, at the top-left corner.
    fn draw_number(&self, buf: &mut [u8], n: u64) {
        const DIGITS: [u16; 10] = [
            0b111_101_101_101_111,
            0b010_110_010_010_111,
            0b111_001_111_100_111,
            0b111_001_111_001_111,
            0b101_101_111_001_001,
            0b111_100_111_001_111,
            0b111_100_111_101_111,
            0b111_001_010_010_010,
            0b111_101_111_101_111,
            0b111_101_111_001_111,
        ];
        let scale = (self.height / 100).max(1);
        let text = n.to_string();
        for (d, ch) in text.bytes().enumerate() {
            let glyph = DIGITS[(ch - b'0') as usize];
            for row in 0..5 {
                for col in 0..3 {
                    let on = glyph >> (14 - (row * 3 + col)) & 1 == 1;
                    let colour = if on { [255, 255, 255] } else { [0, 0, 0] };
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let x = scale * (1 + d * 4 + col) + dx;
                            let y = scale * (1 + row) + dy;
                            if x < self.width && y < self.height {
                                self.put(buf, x, y, colour, 0);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl FrameSource for SyntheticVideo {
    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        // Drawn before its tick and stamped with it, so that it leaves at the moment it
        // is stamped with, like a camera's frame at the end of its exposure.
        let data = self.next_buffer(self.frame_number);
        let timestamp_us = self.pacer.wait();
        self.frame_number += 1;
        Ok(Frame { timestamp_us, data })
    }

    fn describe(&self) -> String {
        format!(
            "synthetic {:?} {}x{}",
            self.pattern, self.width, self.height
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_packed_size_and_change() {
        let v = SyntheticVideo::new(SyntheticPattern::Rgb, 64, 40, 25.0);
        let (a, b) = (v.render(0), v.render(1));
        assert_eq!(a.len(), 64 * 40 * 3);
        assert_ne!(a, b);
        let d = SyntheticVideo::new(SyntheticPattern::Depth, 32, 20, 25.0);
        assert_eq!(d.render(0).len(), 32 * 20 * 2);
    }

    /// A frame its consumer still holds is never drawn over; one it let go of is reused.
    #[test]
    fn a_released_frame_is_drawn_into_again_and_a_held_one_is_left_alone() {
        let mut v = SyntheticVideo::new(SyntheticPattern::Rgb, 64, 40, 1000.0);
        let held = v.next_frame().unwrap().data;
        let copy = held.to_vec();
        let second = v.next_frame().unwrap().data;
        assert_eq!(*held, *copy, "a held frame is unchanged");
        assert_ne!(held.as_ptr(), second.as_ptr());
        assert_eq!(*second, *v.render(1));
        let address = second.as_ptr();
        drop(second);
        // Were the buffer freed, this would take its place (glibc hands a freed block of
        // the same size out again at once), so the next frame could not be at `address`.
        let blocker: Arc<[u8]> = Arc::from(vec![0u8; copy.len()]);
        let third = v.next_frame().unwrap().data;
        assert_eq!(third.as_ptr(), address, "the released buffer is reused");
        assert_eq!(*third, *v.render(2));
        drop(blocker);
    }

    #[test]
    fn paced_frames_are_monotonic() {
        let mut v = SyntheticVideo::new(SyntheticPattern::Yuyv, 16, 16, 200.0);
        let t: Vec<i64> = (0..5)
            .map(|_| v.next_frame().unwrap().timestamp_us)
            .collect();
        assert!(t.windows(2).all(|w| w[1] > w[0]), "{t:?}");
        assert!(t[4] - t[0] >= 4 * 4_000, "{t:?}");
    }
}
