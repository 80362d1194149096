//! Reading the server's `GET /metrics`: one scrape, histograms between two scrapes, and the
//! writer's group commits.

use std::collections::BTreeMap;

/// The writer's counters: commits, and the sum and count of its jobs-per-commit histogram.
pub type WriterCounts = (f64, f64, f64);

/// One scrape of `GET /metrics`: every series by its full name (labels included).
pub struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((name, value)) = line.rsplit_once(' ') {
                let v = match value.trim() {
                    "+Inf" => f64::INFINITY,
                    v => match v.parse() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                };
                m.insert(name.trim().to_string(), v);
            }
        }
        Scrape(m)
    }

    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// A histogram's cumulative buckets (upper bound, count).
    fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut out: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *v))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    /// The writer's counters, as [`describe_commits`] takes them.
    pub fn writer(&self) -> Option<WriterCounts> {
        Some((
            *self.0.get("journeyd_writer_commits_total")?,
            *self.0.get("journeyd_writer_batch_jobs_sum")?,
            *self.0.get("journeyd_writer_batch_jobs_count")?,
        ))
    }
}

/// Describes the group commits between two scrapes (see [`Scrape::writer`]).
pub fn describe_commits(
    before: Option<WriterCounts>,
    after: Option<WriterCounts>,
    secs: f64,
    events_per_job: f64,
) -> String {
    match (before, after) {
        (Some(b), Some(a)) if a.2 > b.2 => {
            let commits = a.0 - b.0;
            let jobs_per_commit = (a.1 - b.1) / (a.2 - b.2);
            format!(
                "{commits:.0} commits ({:.0}/s), {jobs_per_commit:.1} requests per commit on average (about {:.0} events per transaction)",
                commits / secs,
                jobs_per_commit * events_per_job
            )
        }
        _ => "not available (no GET /metrics with writer_commits and writer_batch_jobs)".into(),
    }
}

/// A histogram between two scrapes: its cumulative buckets, observation count and sum.
pub struct HistDelta {
    buckets: Vec<(f64, f64)>,
    pub count: f64,
    pub sum: f64,
}

impl HistDelta {
    pub fn between(before: &Scrape, after: &Scrape, name: &str) -> HistDelta {
        let b = before.buckets(name);
        let a = after.buckets(name);
        let buckets = a
            .iter()
            .map(|(le, n)| {
                let prev = b.iter().find(|(l, _)| l == le).map(|x| x.1).unwrap_or(0.0);
                (*le, n - prev)
            })
            .collect();
        HistDelta {
            buckets,
            count: after.get(&format!("{name}_count")) - before.get(&format!("{name}_count")),
            sum: after.get(&format!("{name}_sum")) - before.get(&format!("{name}_sum")),
        }
    }

    /// The `q` quantile, interpolated linearly inside its bucket (as Prometheus'
    /// `histogram_quantile`), with the bucket's bounds.
    pub fn quantile(&self, q: f64) -> Option<(f64, f64, f64)> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(le, n) in &self.buckets {
            if n >= rank {
                if le.is_infinite() {
                    return Some((lower, lower, le));
                }
                let within = if n > below {
                    (rank - below) / (n - below)
                } else {
                    1.0
                };
                return Some((lower + (le - lower) * within, lower, le));
            }
            lower = le;
            below = n;
        }
        None
    }

    /// "p50 1.2 ms (1-5 ms bucket)" style, from seconds.
    fn describe(&self, q: f64) -> String {
        match self.quantile(q) {
            Some((v, lo, hi)) => format!(
                "p{:.0} {:.1} ms ({}-{} ms bucket)",
                q * 100.0,
                v * 1000.0,
                lo * 1000.0,
                if hi.is_infinite() {
                    "inf".into()
                } else {
                    format!("{}", hi * 1000.0)
                }
            ),
            None => format!("p{:.0} -", q * 100.0),
        }
    }

    /// "p50 ... , p99 ..., mean 1.2 ms", from seconds.
    pub fn describe_p50_p99_mean(&self) -> String {
        format!(
            "{}, {}, mean {:.1} ms",
            self.describe(0.5),
            self.describe(0.99),
            self.sum / self.count.max(1.0) * 1000.0
        )
    }
}
