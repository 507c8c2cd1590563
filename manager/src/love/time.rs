//! The replaced system's time reply (`get_time_data`): UTC, TAI, MJD, the
//! observing day and sidereal times, computed here without an astronomy
//! library. Sidereal time is apparent (Greenwich mean sidereal time from the
//! Earth rotation angle, plus the equation of the equinoxes to its main
//! nutation terms), with UT1 taken as UTC: good to well under a second of
//! time, which is what a control-room clock shows.

/// The summit's longitude, degrees east (negative: west), as the replaced system uses.
pub const SUMMIT_LONGITUDE_DEG: f64 = -70.749417;

/// Unix time of the MJD epoch offset: MJD = Unix days + this.
const MJD_UNIX_EPOCH: f64 = 40587.0;

/// Julian date of the Unix epoch.
const JD_UNIX_EPOCH: f64 = 2_440_587.5;

/// TT − TAI, seconds.
const TT_TAI: f64 = 32.184;

/// `{"time_data":{…},"request_time":<echoed>}` for UTC `utc` (Unix seconds)
/// and TAI − UTC `tai_utc` (seconds).
pub fn time_message(utc: f64, tai_utc: f64, request_time: &serde_json::Value) -> String {
    let tai = utc + tai_utc;
    let gast = apparent_sidereal_hours(utc, tai_utc);
    let time_data = serde_json::json!({
        "utc": utc,
        "tai": tai,
        "mjd": utc / 86_400.0 + MJD_UNIX_EPOCH,
        "observing_day": observing_day(tai),
        "sidereal_summit": (gast + SUMMIT_LONGITUDE_DEG / 15.0).rem_euclid(24.0),
        "sidereal_greenwich": gast,
        "tai_to_utc": -tai_utc,
    });
    serde_json::json!({ "time_data": time_data, "request_time": request_time }).to_string()
}

/// The observing day, `YYYYMMDD`: the date of TAI − 12 h, so one night keeps one date.
pub fn observing_day(tai: f64) -> String {
    let days = ((tai - 43_200.0) / 86_400.0).floor() as i64;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}")
}

/// Year, month and day of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Greenwich apparent sidereal time in hours, [0, 24).
pub fn apparent_sidereal_hours(utc: f64, tai_utc: f64) -> f64 {
    let jd_ut1 = utc / 86_400.0 + JD_UNIX_EPOCH;
    let du = jd_ut1 - 2_451_545.0;
    let t = (du + (tai_utc + TT_TAI) / 86_400.0) / 36_525.0;
    // Earth rotation angle (IAU 2000), in turns.
    let era = (0.7790572732640 + 1.0027378119113545 * du).rem_euclid(1.0);
    // GMST (IAU 2006), arcseconds.
    let gmst = era * 1_296_000.0
        + 0.014506
        + t * (4612.156534 + t * (1.3915817 + t * (-0.00000044 + t * (-0.000029956))));
    // Equation of the equinoxes: Δψ cos ε, main terms, arcseconds.
    let deg = std::f64::consts::PI / 180.0;
    let omega = (125.04452 - 1934.136261 * t) * deg;
    let sun = (280.4665 + 36000.7698 * t) * deg;
    let moon = (218.3165 + 481267.8813 * t) * deg;
    let dpsi = -17.20 * omega.sin() - 1.32 * (2.0 * sun).sin() - 0.23 * (2.0 * moon).sin()
        + 0.21 * (2.0 * omega).sin();
    let eps = (23.439291 - 0.0130042 * t) * deg;
    let gast = gmst + dpsi * eps.cos();
    (gast / 54_000.0).rem_euclid(24.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidereal_time_at_j2000_is_the_known_value() {
        // 2000-01-01T12:00:00 UT1: GMST 18.697374558 h; the equation of the equinoxes is about −0.9 s.
        let utc = 946_728_000.0;
        let gast = apparent_sidereal_hours(utc, 32.0);
        assert!((gast - 18.697_374_558).abs() < 0.0005, "{gast}");
        // A sidereal day is about 236 s shorter than a solar day.
        let next = apparent_sidereal_hours(utc + 86_400.0, 32.0);
        assert!(
            ((next - gast).rem_euclid(24.0) * 3600.0 - 236.555).abs() < 0.5,
            "{next}"
        );
    }

    #[test]
    fn the_observing_day_changes_at_noon_tai() {
        // 2024-11-24T11:59:00 TAI belongs to the night that began on the 23rd.
        let noon = 1_732_449_600.0; // 2024-11-24T12:00:00
        assert_eq!(observing_day(noon - 60.0), "20241123");
        assert_eq!(observing_day(noon + 60.0), "20241124");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn the_reply_has_every_key_and_echoes_the_request_time() {
        let v: serde_json::Value =
            serde_json::from_str(&time_message(1_732_412_345.0, 37.0, &serde_json::json!(12.5))).unwrap();
        assert_eq!(v["request_time"], 12.5);
        let t = &v["time_data"];
        assert_eq!(t["tai"].as_f64().unwrap() - t["utc"].as_f64().unwrap(), 37.0);
        assert_eq!(t["tai_to_utc"], -37.0);
        // 2024-11-24T01:39:05Z.
        assert!((t["mjd"].as_f64().unwrap() - 60_638.068_8).abs() < 0.0001);
        for key in ["sidereal_summit", "sidereal_greenwich"] {
            assert!((0.0..24.0).contains(&t[key].as_f64().unwrap()), "{key}");
        }
    }
}
