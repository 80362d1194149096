//! Time in the person's zone (pure): send windows (SPEC §3.5) and contextual delays (SPEC §3.2
//! `delay.until`). Zones and daylight-saving changes come from the IANA database (chrono-tz).

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::journey::{Window, ZoneSource, lookup};

/// The zone a window applies in for a profile: its named zone, or the zone found at its path in
/// `root` (`{"context", "traits"}`), else the default (also for a name the database does not
/// know).
pub(crate) fn zone(window: &Window, root: &Value) -> Tz {
    match &window.time_zone {
        ZoneSource::Default => window.default_time_zone,
        ZoneSource::Named(tz) => *tz,
        ZoneSource::Path(segments) => lookup(root, segments)
            .and_then(Value::as_str)
            .and_then(|name| name.parse::<Tz>().ok())
            .unwrap_or(window.default_time_zone),
    }
}

/// When a send at `at` (unix ms) may go out: `None` when `at` is inside the window, else the next
/// opening. An opening whose local time does not exist that day (a daylight-saving gap) is the
/// first local moment after it that does.
pub(crate) fn next_opening(window: &Window, tz: Tz, at: i64) -> Option<i64> {
    let now = DateTime::<Utc>::from_timestamp_millis(at)?.with_timezone(&tz);
    let minutes = now.hour_minute();
    let today = now.date_naive();
    let open_today = window.days[today.weekday().num_days_from_monday() as usize];
    if open_today && (window.from..window.to).contains(&minutes) {
        return None;
    }
    // At most a week ahead (the window has at least one day).
    for ahead in 0..=7 {
        let date = today + Duration::days(ahead);
        if !window.days[date.weekday().num_days_from_monday() as usize] {
            continue;
        }
        if ahead == 0 && minutes >= window.from {
            continue;
        }
        let local = date.and_time(
            NaiveTime::from_hms_opt(window.from / 60 % 24, window.from % 60, 0)
                .expect("a validated window time"),
        ) + Duration::days(i64::from(window.from / (24 * 60)));
        if let Some(instant) = first_instant_at_or_after(tz, local)
            && instant.timestamp_millis() > at
        {
            return Some(instant.timestamp_millis());
        }
    }
    None
}

/// The first real instant at or after a local time in `tz` (the earliest of two in a fold).
fn first_instant_at_or_after(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Tz>> {
    // A gap is at most a few hours (most are one); look minute by minute past it.
    (0..=24 * 60).find_map(
        |m| match tz.from_local_datetime(&(local + Duration::minutes(m))) {
            LocalResult::Single(t) => Some(t),
            LocalResult::Ambiguous(earliest, _) => Some(earliest),
            LocalResult::None => None,
        },
    )
}

trait HourMinute {
    fn hour_minute(&self) -> u32;
}

impl HourMinute for DateTime<Tz> {
    fn hour_minute(&self) -> u32 {
        use chrono::Timelike;
        self.hour() * 60 + self.minute()
    }
}

/// The time a contextual delay waits for: the ISO 8601 time at the path, plus the offset; `None`
/// when there is none or it does not parse.
pub(crate) fn until(path: &[String], offset_ms: i64, root: &Value) -> Option<i64> {
    let text = lookup(root, path)?.as_str()?;
    let at = crate::clock::Timestamp::parse(text)?.ms();
    at.checked_add(offset_ms)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn window(days: [bool; 7], from: &str, to: &str, zone: &str) -> Window {
        let minutes = |t: &str| {
            let (h, m) = t.split_once(':').unwrap();
            h.parse::<u32>().unwrap() * 60 + m.parse::<u32>().unwrap()
        };
        Window {
            days,
            from: minutes(from),
            to: minutes(to),
            time_zone: ZoneSource::Default,
            default_time_zone: zone.parse().unwrap(),
        }
    }

    fn ms(t: &str) -> i64 {
        crate::clock::Timestamp::parse(t).unwrap().ms()
    }

    const WEEKDAYS: [bool; 7] = [true, true, true, true, true, false, false];

    #[test]
    fn openings() {
        let w = window(WEEKDAYS, "09:00", "20:00", "Europe/Berlin");
        let tz = w.default_time_zone;
        let cases = [
            // Inside: Wednesday 10:00 in Berlin (09:00 UTC, winter).
            ("2026-12-02T09:00:00Z", None),
            // 03:00 local: the same day at 09:00 local.
            ("2026-12-02T02:00:00Z", Some("2026-12-02T08:00:00Z")),
            // After 20:00 on a Friday: Monday 09:00.
            ("2026-12-04T19:30:00Z", Some("2026-12-07T08:00:00Z")),
            // Saturday: Monday.
            ("2026-12-05T12:00:00Z", Some("2026-12-07T08:00:00Z")),
            // 20:00 itself is outside (the window is [from, to)).
            ("2026-12-02T19:00:00Z", Some("2026-12-03T08:00:00Z")),
        ];
        for (at, want) in cases {
            assert_eq!(next_opening(&w, tz, ms(at)), want.map(ms), "{at}");
        }
    }

    #[test]
    fn daylight_saving_changes_follow_the_zone() {
        // Berlin moves to summer time on 2026-03-29 at 02:00 (to 03:00).
        let w = window([true; 7], "09:00", "20:00", "Europe/Berlin");
        let tz = w.default_time_zone;
        // Saturday 21:00 CET (20:00 UTC) -> Sunday 09:00 CEST = 07:00 UTC.
        assert_eq!(
            next_opening(&w, tz, ms("2026-03-28T20:00:00Z")),
            Some(ms("2026-03-29T07:00:00Z"))
        );
        // A window opening in the gap (02:30 does not exist that night): 03:00 CEST.
        let gap = window([true; 7], "02:30", "05:00", "Europe/Berlin");
        assert_eq!(
            next_opening(&gap, tz, ms("2026-03-28T23:00:00Z")),
            Some(ms("2026-03-29T01:00:00Z"))
        );
        // In the fold of autumn (02:30 happens twice on 2026-10-25): the first one.
        assert_eq!(
            next_opening(&gap, tz, ms("2026-10-24T23:00:00Z")),
            Some(ms("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn zones_from_paths_fall_back_to_the_default() {
        let mut w = window([true; 7], "09:00", "20:00", "Europe/Berlin");
        w.time_zone = ZoneSource::Path(vec!["traits".into(), "tz".into()]);
        let zone_of = |root: Value| zone(&w, &root);
        assert_eq!(
            zone_of(json!({"traits": {"tz": "America/New_York"}})),
            chrono_tz::America::New_York
        );
        assert_eq!(
            zone_of(json!({"traits": {"tz": "Mars/Olympus"}})),
            chrono_tz::Europe::Berlin
        );
        assert_eq!(zone_of(json!({"traits": {}})), chrono_tz::Europe::Berlin);
    }

    #[test]
    fn contextual_times() {
        let path = vec![
            "context".to_string(),
            "Booked".to_string(),
            "at".to_string(),
        ];
        let root = json!({"context": {"Booked": {"at": "2026-12-10T15:00:00Z", "bad": "soon"}}});
        assert_eq!(
            until(&path, -3_600_000, &root),
            Some(ms("2026-12-10T14:00:00Z"))
        );
        let bad = vec![
            "context".to_string(),
            "Booked".to_string(),
            "bad".to_string(),
        ];
        assert_eq!(until(&bad, 0, &root), None);
        let missing = vec![
            "context".to_string(),
            "Booked".to_string(),
            "nope".to_string(),
        ];
        assert_eq!(until(&missing, 0, &root), None);
    }
}
