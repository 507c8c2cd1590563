//! What the night reads from a role's metrics port: `/readyz` and the
//! Prometheus page of `/metrics`, over plain HTTP/1.0 on the loopback.

use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over HTTP/1.0 on the loopback: the status and the body.
pub(super) async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET http://{addr}{path}: no answer within 5 s"))??;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET http://{addr}{path}: not an HTTP response"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((status, body))
}

/// The sum of every series of metric `name` (any labels) in a Prometheus
/// text page whose labels include `label` (`key="value"`), if given.
pub fn metric_sum(page: &str, name: &str, label: Option<&str>) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            if let Some(want) = label {
                if !labels.split(',').any(|kv| kv.trim() == want) {
                    return None;
                }
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_series_are_summed_by_label() {
        let page = "# HELP meridian_ingest_samples_stored_total Samples written.\n\
                    # TYPE meridian_ingest_samples_stored_total counter\n\
                    meridian_ingest_samples_stored_total{category=\"telemetry\"} 1200\n\
                    meridian_ingest_samples_stored_total{category=\"event\"} 34\n\
                    meridian_ingest_samples_stored_total_other 5\n\
                    meridian_ingest_producers 5\n";
        let name = "meridian_ingest_samples_stored_total";
        assert_eq!(metric_sum(page, name, Some("category=\"event\"")), 34.0);
        assert_eq!(metric_sum(page, name, None), 1234.0);
        assert_eq!(metric_sum(page, "meridian_ingest_producers", None), 5.0);
        assert_eq!(metric_sum(page, "meridian_missing", None), 0.0);
    }
}
