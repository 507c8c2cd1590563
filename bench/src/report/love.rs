//! The report's section of the LOVE comparison, read from the JSON that
//! `meridian-bench love --json` writes.

use super::section::Section;
use super::table::{fmt_rate, fmt_ratio, ratio, Table};

/// The LOVE comparison (`meridian-bench love --json`): one row of its JSON.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoveRow {
    pub server: String,
    pub clients: u64,
    pub topics: u64,
    pub rate_hz: f64,
    pub offered_per_s: f64,
    pub delivered_per_s: f64,
    pub server_cores: f64,
    pub per_core: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    pub server_rss_mib: f64,
    pub note: String,
}

/// What `meridian-bench love --json` wrote.
#[derive(Clone, Debug, Default)]
pub struct LoveResults {
    pub rows: Vec<LoveRow>,
    /// Package name and version of the replaced system's stack.
    pub versions: Vec<(String, String)>,
    pub machine: String,
}

/// Reads the JSON of `meridian-bench love --json`; the error names the missing or mistyped field.
pub fn parse_love(text: &str) -> anyhow::Result<LoveResults> {
    use anyhow::Context;
    let v: serde_json::Value = serde_json::from_str(text).context("bench love --json: not JSON")?;
    let rows = v
        .get("rows")
        .and_then(|r| r.as_array())
        .context("bench love --json: no `rows` array")?;
    let mut out = LoveResults::default();
    for (i, row) in rows.iter().enumerate() {
        let num = |k: &str| {
            row.get(k)
                .and_then(|x| x.as_f64())
                .with_context(|| format!("bench love --json: rows[{i}].{k} is missing or not a number"))
        };
        let text = |k: &str| row.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        out.rows.push(LoveRow {
            server: text("server"),
            clients: num("clients")? as u64,
            topics: num("topics")? as u64,
            rate_hz: num("rate_hz")?,
            offered_per_s: num("offered_per_s")?,
            delivered_per_s: num("delivered_per_s")?,
            server_cores: num("server_cores")?,
            per_core: num("per_core")?,
            lag_p50_ms: num("lag_p50_ms")?,
            lag_p99_ms: num("lag_p99_ms")?,
            lag_max_ms: num("lag_max_ms")?,
            server_rss_mib: num("server_rss_mib")?,
            note: text("note"),
        });
    }
    if let Some(versions) = v.get("versions").and_then(|x| x.as_object()) {
        for (name, version) in versions {
            out.versions
                .push((name.clone(), version.as_str().unwrap_or("?").to_string()));
        }
    }
    out.machine = v
        .get("machine")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    Ok(out)
}

/// The LOVE comparison: its section and summary rows, or a section that
/// says why it was not run.
pub fn love_section(love: Result<&LoveResults, &str>, summary: &mut Table) -> Section {
    let title = "LOVE comparison: Django Channels + channels_redis vs Meridian's LOVE endpoint".to_string();
    let love = match love {
        Ok(l) => l,
        Err(reason) => {
            summary.row(vec![
                "LOVE".into(),
                format!("not run ({reason})"),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            return Section {
                title,
                intro: format!("LOVE comparison: not run ({reason})."),
                ..Section::default()
            };
        }
    };
    let versions: Vec<String> = love.versions.iter().map(|(n, v)| format!("{n} {v}")).collect();
    let mut section = Section {
        title,
        intro: format!(
            "`meridian-bench love`: the same LOVE producer messages relayed to the same clients by a \
             Django Channels + channels_redis relay ({}) and by Meridian's LOVE-compatible endpoint. \
             Messages per second per server core, and lag.",
            if versions.is_empty() {
                "versions not reported".into()
            } else {
                versions.join(", ")
            }
        ),
        ..Section::default()
    };
    let mut t = Table::new(&[
        ("server", false),
        ("clients", true),
        ("topics × Hz", false),
        ("offered /s", true),
        ("delivered /s", true),
        ("server cores", true),
        ("messages/s per core", true),
        ("lag p50 / p99 / max (ms)", false),
        ("RSS (MiB)", true),
        ("note", false),
    ]);
    for row in &love.rows {
        t.row(vec![
            row.server.clone(),
            row.clients.to_string(),
            format!("{} × {}", row.topics, row.rate_hz),
            fmt_rate(row.offered_per_s),
            fmt_rate(row.delivered_per_s),
            format!("{:.2}", row.server_cores),
            fmt_rate(row.per_core),
            format!(
                "{:.1} / {:.1} / {:.1}",
                row.lag_p50_ms, row.lag_p99_ms, row.lag_max_ms
            ),
            format!("{:.0}", row.server_rss_mib),
            row.note.clone(),
        ]);
    }
    section.tables.push(t);
    let mut clients: Vec<u64> = love.rows.iter().map(|r| r.clients).collect();
    clients.dedup();
    for n in clients {
        let find = |server: &str| love.rows.iter().find(|r| r.clients == n && r.server == server);
        if let (Some(m), Some(d)) = (find("meridian"), find("django-channels")) {
            let line = format!(
                "{n} clients: Meridian ÷ Django Channels: messages/s per core {}; Django Channels ÷ Meridian: p99 lag {}.",
                fmt_ratio(ratio(m.per_core, d.per_core)),
                fmt_ratio(ratio(d.lag_p99_ms, m.lag_p99_ms)),
            );
            section.notes.push(line);
            summary.row(vec![
                "LOVE".into(),
                format!("{n} clients, LOVE protocol: Meridian"),
                format!("{}/s per core", fmt_rate(m.per_core)),
                format!("{}/s per core (Django Channels)", fmt_rate(d.per_core)),
                fmt_ratio(ratio(m.per_core, d.per_core)),
                format!(
                    "{:.1} / {:.1} / {:.1} (Django: p99 {:.1})",
                    m.lag_p50_ms, m.lag_p99_ms, m.lag_max_ms, d.lag_p99_ms
                ),
                format!("{:.2} (Django {:.2})", m.server_cores, d.server_cores),
                format!("{:.0} (Django {:.0})", m.server_rss_mib, d.server_rss_mib),
            ]);
        }
    }
    if !love.machine.is_empty() {
        section
            .notes
            .push(format!("Machine as bench love saw it: {}.", love.machine));
    }
    section
}

#[cfg(test)]
mod tests {
    use super::super::section::summary_table;
    use super::*;

    #[test]
    fn love_json_is_read_and_compared_per_core() {
        let json = r#"{"rows":[
            {"server":"django-channels","clients":100,"topics":10,"rate_hz":10,"offered_per_s":10000,
             "delivered_per_s":9000,"server_cores":1.5,"per_core":6000,"lag_p50_ms":40,"lag_p99_ms":200,
             "lag_max_ms":900,"server_rss_mib":120,"note":"4 daphne workers"},
            {"server":"meridian","clients":100,"topics":10,"rate_hz":10,"offered_per_s":10000,
             "delivered_per_s":10000,"server_cores":0.2,"per_core":50000,"lag_p50_ms":2,"lag_p99_ms":8,
             "lag_max_ms":20,"server_rss_mib":30,"note":""}],
            "versions":{"django":"5.2","channels":"4.3"},"machine":"2 cores"}"#;
        let love = parse_love(json).unwrap();
        assert_eq!(love.rows.len(), 2);
        assert_eq!(love.rows[1].per_core, 50000.0);
        let mut summary = summary_table();
        let s = love_section(Ok(&love), &mut summary);
        assert!(
            s.notes[0].contains("messages/s per core 8.33; Django Channels ÷ Meridian: p99 lag 25.00"),
            "{:?}",
            s.notes
        );
        assert!(s.intro.contains("django 5.2"));
        let err = parse_love(r#"{"rows":[{"server":"meridian"}]}"#).unwrap_err();
        assert!(err.to_string().contains("rows[0].clients"), "{err}");
        let mut summary = summary_table();
        let s = love_section(Err("the subcommand is not in this build"), &mut summary);
        assert_eq!(
            s.intro,
            "LOVE comparison: not run (the subcommand is not in this build)."
        );
    }
}
