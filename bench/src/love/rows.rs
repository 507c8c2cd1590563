//! The figures of one `love` run: a row of the printed table and of the
//! JSON document `--json` writes for `all`.

use super::args::Server;
use crate::measure::Percentiles;
use std::time::Duration;

/// The figures of one run, as the JSON row says them.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) server: Server,
    pub(super) clients: usize,
    pub(super) topics: usize,
    pub(super) rate_hz: f64,
    /// Data messages per second the clients would get if all were delivered.
    pub(super) offered_per_s: f64,
    pub(super) delivered_per_s: f64,
    /// The server process's CPU over the window, in cores (redis-server not included).
    pub(super) server_cores: f64,
    pub(super) redis_cores: f64,
    pub(super) lag: Percentiles,
    pub(super) server_rss_mib: f64,
    pub(super) note: String,
}

impl Row {
    fn per_core(&self) -> f64 {
        if self.server_cores > 0.0 {
            self.delivered_per_s / self.server_cores
        } else {
            0.0
        }
    }

    fn json(&self) -> serde_json::Value {
        let ms = |d: Duration| round(d.as_secs_f64() * 1e3, 3);
        serde_json::json!({
            "server": self.server.name(),
            "clients": self.clients,
            "topics": self.topics,
            "rate_hz": self.rate_hz,
            "offered_per_s": round(self.offered_per_s, 1),
            "delivered_per_s": round(self.delivered_per_s, 1),
            "server_cores": round(self.server_cores, 3),
            "per_core": round(self.per_core(), 1),
            "lag_p50_ms": ms(self.lag.p50),
            "lag_p99_ms": ms(self.lag.p99),
            "lag_max_ms": ms(self.lag.max),
            "server_rss_mib": round(self.server_rss_mib, 1),
            "note": self.note,
        })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    if x.is_finite() {
        (x * k).round() / k
    } else {
        0.0
    }
}

/// The whole JSON document `--json` writes.
pub(super) fn report_json(rows: &[Row], versions: &serde_json::Value, machine: &str) -> serde_json::Value {
    serde_json::json!({
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "versions": versions,
        "machine": machine,
    })
}

pub(super) fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| clients | server | offered msg/s | delivered msg/s | of offered | server cores | msg/s per core | lag p50 / p99 / max (ms) | server RSS MiB | redis cores |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|");
    for r in rows {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let lag = if r.lag.count == 0 {
            "no messages".to_string()
        } else {
            format!(
                "{:.1} / {:.1} / {:.1}",
                ms(r.lag.p50),
                ms(r.lag.p99),
                ms(r.lag.max)
            )
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1}% | {:.2} | {:.0} | {lag} | {:.0} | {:.2} |",
            r.clients,
            r.server.name(),
            r.offered_per_s,
            r.delivered_per_s,
            if r.offered_per_s > 0.0 {
                100.0 * r.delivered_per_s / r.offered_per_s
            } else {
                0.0
            },
            r.server_cores,
            r.per_core(),
            r.server_rss_mib,
            r.redis_cores,
        );
    }
    for pair in rows.chunks(2) {
        if let [a, b] = pair {
            if a.clients == b.clients && a.server != b.server && a.per_core() > 0.0 {
                let (d, m) = if a.server == Server::Django {
                    (a, b)
                } else {
                    (b, a)
                };
                println!(
                    "{} clients: meridian delivers {:.1}× the messages per core of django-channels ({:.1}× the messages)",
                    a.clients,
                    m.per_core() / d.per_core().max(1e-9),
                    m.delivered_per_s / d.delivered_per_s.max(1e-9),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(server: Server) -> Row {
        Row {
            server,
            clients: 100,
            topics: 10,
            rate_hz: 10.0,
            offered_per_s: 10_000.0,
            delivered_per_s: 8_000.0,
            server_cores: 0.5,
            redis_cores: 0.1,
            lag: Percentiles {
                count: 10,
                p50: Duration::from_micros(1500),
                p99: Duration::from_millis(20),
                max: Duration::from_millis(31),
            },
            server_rss_mib: 64.04,
            note: "n".into(),
        }
    }

    #[test]
    fn json_has_exactly_the_shape_bench_all_reads() {
        let versions = serde_json::json!({"django":"5.2.19","channels":"4.3.2","channels_redis":"4.3.0","daphne":"4.2.3"});
        let doc = report_json(
            &[row(Server::Django), row(Server::Meridian)],
            &versions,
            "2 cores",
        );
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&doc), ["machine", "rows", "versions"]);
        assert_eq!(
            keys(&doc["versions"]),
            ["channels", "channels_redis", "daphne", "django"]
        );
        let rows = doc["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        let mut expected = [
            "server",
            "clients",
            "topics",
            "rate_hz",
            "offered_per_s",
            "delivered_per_s",
            "server_cores",
            "per_core",
            "lag_p50_ms",
            "lag_p99_ms",
            "lag_max_ms",
            "server_rss_mib",
            "note",
        ];
        expected.sort();
        assert_eq!(keys(&rows[0]), expected);
        assert_eq!(rows[0]["server"], "django-channels");
        assert_eq!(rows[1]["server"], "meridian");
        assert_eq!(rows[0]["clients"], 100);
        assert_eq!(rows[0]["per_core"], 16_000.0);
        assert_eq!(rows[0]["lag_p50_ms"], 1.5);
        assert_eq!(rows[0]["lag_p99_ms"], 20.0);
        assert_eq!(rows[0]["server_rss_mib"], 64.0);
        assert_eq!(doc["machine"], "2 cores");
    }

    #[test]
    fn an_idle_server_has_no_per_core_figure_rather_than_infinity() {
        let mut r = row(Server::Meridian);
        r.server_cores = 0.0;
        assert_eq!(r.per_core(), 0.0);
        assert_eq!(r.json()["per_core"], 0.0);
    }
}
