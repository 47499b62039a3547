//! Camera calibration of a video stream: pinhole intrinsics, a distortion model, the
//! camera→IMU extrinsic with its time offset, the depth unit and how the camera is
//! mounted. It comes from the stream's `calibration` table in the config, is validated
//! there, and is stored as the track tag [`TAG_CALIBRATION`] (JSON) in every file and,
//! with the stream's config, in the manifest. Exporters read it back from the finished
//! file ([`file_calibrations`]).
//!
//! ```toml
//! [stream.calibration]
//! intrinsics = [615.0, 615.0, 320.5, 240.5]   # fx, fy, cx, cy (pixels of the stored image)
//! distortion_model = "radtan"                  # or "equidistant" (Kalibr's names)
//! distortion_coeffs = [0.1, -0.2, 0.001, 0.0]  # radtan: k1 k2 p1 p2; equidistant: k1..k4
//! t_imu_cam = [[1, 0, 0, 0.02], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
//! timeshift_cam_imu_s = 0.0                    # t_imu = t_cam + shift (Kalibr's sign)
//! depth_unit_mm = 1.0                          # 16-bit depth: millimetres per unit
//! rotation_deg = 0                             # 0 | 90 | 180 | 270
//! flip = "none"                                # none | horizontal | vertical
//! ```
//!
//! Conventions: `t_imu_cam` maps a point in the camera frame into the IMU frame
//! (camera → IMU: EuRoC's `T_BS` with the IMU as body, ORB-SLAM3's `T_b_c1`); Kalibr's
//! `T_cam_imu` is its inverse ([`Calibration::t_cam_imu`]). Pixels are stored as the
//! sensor gave them: the intrinsics are those of the stored image, and `rotation_deg`
//! (clockwise) and `flip` say how to turn it upright for display. A camera mounted
//! upside down is `rotation_deg = 180` with intrinsics measured on the stored image
//! (its cx, cy are not those of an upright one).

use std::collections::BTreeMap;
use std::path::Path;

use ffmpeg_next::format;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::media::{open_for_copy, stream_name, stream_title};

/// Track tag holding a stream's [`Calibration`] as JSON.
pub const TAG_CALIBRATION: &str = "GRABD_CALIBRATION";

/// The largest camera/IMU time offset accepted (seconds): larger is a unit mistake.
pub const MAX_TIMESHIFT_S: f64 = 1.0;

/// Lens distortion models, named as Kalibr names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistortionModel {
    /// Radial-tangential (OpenCV's plumb bob): k1, k2, p1, p2.
    Radtan,
    /// Equidistant (fisheye, Kannala-Brandt): k1, k2, k3, k4.
    Equidistant,
}

impl DistortionModel {
    /// How many coefficients the model takes.
    pub const COEFFS: usize = 4;

    /// The name EuRoC's `sensor.yaml` uses.
    pub fn euroc_name(self) -> &'static str {
        match self {
            DistortionModel::Radtan => "radial-tangential",
            DistortionModel::Equidistant => "equidistant",
        }
    }

    /// The name Kalibr's camchain uses.
    pub fn kalibr_name(self) -> &'static str {
        match self {
            DistortionModel::Radtan => "radtan",
            DistortionModel::Equidistant => "equidistant",
        }
    }
}

/// A mirror applied to the stored image (after the rotation) to show it upright.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flip {
    #[default]
    None,
    Horizontal,
    Vertical,
}

/// One video stream's calibration; every part is optional (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// fx, fy, cx, cy in pixels of the stored image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intrinsics: Option<[f64; 4]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distortion_model: Option<DistortionModel>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distortion_coeffs: Vec<f64>,
    /// Camera → IMU, 4×4 rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_imu_cam: Option<[[f64; 4]; 4]>,
    /// Seconds: t_imu = t_cam + shift.
    #[serde(default)]
    pub timeshift_cam_imu_s: f64,
    /// Millimetres per unit of a 16-bit depth image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth_unit_mm: Option<f64>,
    /// Clockwise turn that shows the stored image upright.
    #[serde(default)]
    pub rotation_deg: u16,
    #[serde(default)]
    pub flip: Flip,
}

/// The identity transform.
pub const IDENTITY: [[f64; 4]; 4] = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

impl Calibration {
    /// Check the calibration of a `width`x`height` stream; `depth` says whether its
    /// pixels are 16-bit depth values. The error names the field and the limit.
    pub fn validate(&self, width: u32, height: u32, depth: bool) -> Result<()> {
        // The config names the stream's `calibration` key; the message its own key.
        let bad = |key: &str, message: String| {
            Err(Error::InvalidSetting {
                field: "calibration",
                message: format!("{key}: {message}"),
            })
        };
        if let Some([fx, fy, cx, cy]) = self.intrinsics {
            if !(fx.is_finite() && fy.is_finite() && fx > 0.0 && fy > 0.0) {
                return bad(
                    "intrinsics",
                    format!("fx and fy must be positive, got {fx}, {fy}"),
                );
            }
            let (w, h) = (f64::from(width), f64::from(height));
            if !((0.0..=w).contains(&cx) && (0.0..=h).contains(&cy)) {
                return bad(
                    "intrinsics",
                    format!("cx, cy = {cx}, {cy} must lie in the {width}x{height} image"),
                );
            }
        }
        match (self.distortion_model, self.distortion_coeffs.len()) {
            (None, 0) => {}
            (None, _) => {
                return bad(
                    "distortion_coeffs",
                    "given without a distortion_model (radtan or equidistant)".into(),
                )
            }
            (Some(_), _) if self.intrinsics.is_none() => {
                return bad(
                    "distortion_model",
                    "a distortion model needs the intrinsics too".into(),
                )
            }
            (Some(model), n) if n != DistortionModel::COEFFS => {
                return bad(
                    "distortion_coeffs",
                    format!(
                        "{} takes {} coefficients, got {n}",
                        model.kalibr_name(),
                        DistortionModel::COEFFS
                    ),
                )
            }
            (Some(_), _) => {}
        }
        if self.distortion_coeffs.iter().any(|c| !c.is_finite()) {
            return bad("distortion_coeffs", "must be finite numbers".into());
        }
        if let Some(t) = &self.t_imu_cam {
            if let Some(why) = not_rigid(t) {
                return bad("t_imu_cam", why);
            }
        }
        let shift = self.timeshift_cam_imu_s;
        if !(shift.is_finite() && shift.abs() <= MAX_TIMESHIFT_S) {
            return bad(
                "timeshift_cam_imu_s",
                format!("{shift} s is outside ±{MAX_TIMESHIFT_S} s"),
            );
        }
        if let Some(unit) = self.depth_unit_mm {
            if !depth {
                return bad(
                    "depth_unit_mm",
                    "only a 16-bit grey (depth) stream has a depth unit".into(),
                );
            }
            if !(unit.is_finite() && unit > 0.0 && unit <= 1000.0) {
                return bad(
                    "depth_unit_mm",
                    format!("{unit} must be above 0 and at most 1000 mm"),
                );
            }
        }
        if ![0, 90, 180, 270].contains(&self.rotation_deg) {
            return bad(
                "rotation_deg",
                format!("must be 0, 90, 180 or 270, got {}", self.rotation_deg),
            );
        }
        Ok(())
    }

    /// Camera → IMU (identity when not calibrated).
    pub fn t_imu_cam_or_identity(&self) -> [[f64; 4]; 4] {
        self.t_imu_cam.unwrap_or(IDENTITY)
    }

    /// IMU → camera: Kalibr's `T_cam_imu`, the inverse of [`Self::t_imu_cam`].
    pub fn t_cam_imu(&self) -> [[f64; 4]; 4] {
        invert_rigid(&self.t_imu_cam_or_identity())
    }

    /// The stored image's depth unit in mm, for a depth stream (1 mm, what grabd's
    /// depth sources give, when not stated).
    pub fn depth_unit_mm_or_default(&self) -> f64 {
        self.depth_unit_mm.unwrap_or(1.0)
    }

    /// The track tag's value.
    pub fn to_tag(&self) -> String {
        // Plain numbers and enums: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why `t` is not a rigid transform (rotation + translation, last row 0 0 0 1).
fn not_rigid(t: &[[f64; 4]; 4]) -> Option<String> {
    const TOLERANCE: f64 = 1e-6;
    if t.iter().flatten().any(|v| !v.is_finite()) {
        return Some("must hold finite numbers".into());
    }
    if t[3] != [0.0, 0.0, 0.0, 1.0] {
        return Some(format!("its last row must be [0, 0, 0, 1], got {:?}", t[3]));
    }
    for i in 0..3 {
        for j in 0..3 {
            let dot: f64 = (0..3).map(|k| t[i][k] * t[j][k]).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            if (dot - want).abs() > TOLERANCE {
                return Some(format!(
                    "its 3x3 rotation is not orthonormal (rows {i} and {j}: {dot:.9}, tolerance {TOLERANCE})"
                ));
            }
        }
    }
    let r = |i: usize, j: usize| t[i][j];
    let det = r(0, 0) * (r(1, 1) * r(2, 2) - r(1, 2) * r(2, 1))
        - r(0, 1) * (r(1, 0) * r(2, 2) - r(1, 2) * r(2, 0))
        + r(0, 2) * (r(1, 0) * r(2, 1) - r(1, 1) * r(2, 0));
    if det < 0.0 {
        return Some("its 3x3 rotation is a reflection (determinant -1)".into());
    }
    None
}

/// The inverse of a rigid transform: Rᵀ and −Rᵀt.
pub fn invert_rigid(t: &[[f64; 4]; 4]) -> [[f64; 4]; 4] {
    let mut inv = IDENTITY;
    for i in 0..3 {
        for j in 0..3 {
            inv[i][j] = t[j][i];
        }
        inv[i][3] = -(0..3).map(|k| t[k][i] * t[k][3]).sum::<f64>();
    }
    inv
}

/// The calibration stored in a track's tags, if any.
pub fn track_calibration(stream: &format::stream::Stream) -> Result<Option<Calibration>> {
    let Some(json) = stream.metadata().get(TAG_CALIBRATION).map(str::to_owned) else {
        return Ok(None);
    };
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| Error::BadFile {
            path: format!("track {}", stream.index()).into(),
            reason: format!("tag {TAG_CALIBRATION} is not a calibration: {e}"),
        })
}

/// The calibration of every calibrated track of a finished file, by stream name.
pub fn file_calibrations(path: &Path) -> Result<BTreeMap<String, Calibration>> {
    let input = open_for_copy(path)?;
    let mut found = BTreeMap::new();
    for stream in input.streams() {
        let calibration = track_calibration(&stream).map_err(|e| Error::BadFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if let Some(calibration) = calibration {
            let name = stream_name(&stream)
                .or_else(|| stream_title(&stream))
                .unwrap_or_else(|| format!("#{}", stream.index()));
            found.insert(name, calibration);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Calibration {
        Calibration {
            intrinsics: Some([500.0, 501.0, 320.0, 200.0]),
            distortion_model: Some(DistortionModel::Radtan),
            distortion_coeffs: vec![0.1, -0.05, 0.001, 0.002],
            t_imu_cam: Some([
                [0.0, -1.0, 0.0, 0.05],
                [1.0, 0.0, 0.0, -0.01],
                [0.0, 0.0, 1.0, 0.002],
                [0.0, 0.0, 0.0, 1.0],
            ]),
            timeshift_cam_imu_s: 0.004,
            depth_unit_mm: None,
            rotation_deg: 180,
            flip: Flip::None,
        }
    }

    fn refusal(c: &Calibration, depth: bool) -> String {
        c.validate(640, 400, depth).unwrap_err().to_string()
    }

    #[test]
    fn a_full_calibration_is_valid_and_survives_its_tag() {
        let c = full();
        c.validate(640, 400, false).unwrap();
        let back: Calibration = serde_json::from_str(&c.to_tag()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn mistakes_are_refused_naming_the_field_and_the_limit() {
        let mut c = full();
        c.intrinsics = Some([500.0, 500.0, 700.0, 200.0]);
        assert!(refusal(&c, false)
            .contains("calibration: intrinsics: cx, cy = 700, 200 must lie in the 640x400"));
        let mut c = full();
        c.distortion_coeffs.pop();
        assert!(refusal(&c, false).contains("radtan takes 4 coefficients, got 3"));
        let mut c = full();
        c.distortion_model = None;
        assert!(refusal(&c, false).contains("calibration: distortion_coeffs: given"));
        let mut c = full();
        c.t_imu_cam.as_mut().unwrap()[0][0] = 0.5;
        assert!(refusal(&c, false).contains("not orthonormal"));
        let mut c = full();
        c.t_imu_cam.as_mut().unwrap()[3] = [0.0, 0.0, 1.0, 1.0];
        assert!(refusal(&c, false).contains("last row"));
        let mut c = full();
        c.timeshift_cam_imu_s = 4.0;
        assert!(refusal(&c, false).contains("±1 s"));
        let mut c = full();
        c.rotation_deg = 45;
        assert!(refusal(&c, false).contains("0, 90, 180 or 270, got 45"));
        let c = Calibration {
            depth_unit_mm: Some(1.0),
            ..Default::default()
        };
        assert!(refusal(&c, false).contains("16-bit grey"));
        c.validate(640, 400, true).unwrap();
        let c = Calibration {
            depth_unit_mm: Some(0.0),
            ..Default::default()
        };
        assert!(refusal(&c, true).contains("depth_unit_mm"));
    }

    #[test]
    fn kalibrs_t_cam_imu_is_the_inverse_of_t_imu_cam() {
        let c = full();
        let (a, b) = (c.t_imu_cam.unwrap(), c.t_cam_imu());
        for i in 0..4 {
            for j in 0..4 {
                let product: f64 = (0..4).map(|k| a[i][k] * b[k][j]).sum();
                assert!(
                    (product - IDENTITY[i][j]).abs() < 1e-12,
                    "{i},{j}: {product}"
                );
            }
        }
        // A pure 90° turn about z plus a translation, inverted by hand.
        assert_eq!(b[0], [0.0, 1.0, 0.0, 0.01]);
        assert_eq!(b[1], [-1.0, 0.0, 0.0, 0.05]);
    }
}
