//! One section of the report (title, intro, tables, notes), and the
//! summary table every section adds its rows to.

use super::table::Table;

/// One section of the report: a title, what it measured, its tables, and notes after them.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub title: String,
    pub intro: String,
    pub tables: Vec<Table>,
    pub notes: Vec<String>,
}

/// The summary table's columns.
pub fn summary_table() -> Table {
    Table::new(&[
        ("section", false),
        ("measured", false),
        ("throughput", true),
        ("baseline (same run)", true),
        ("ratio", true),
        ("lag p50 / p99 / max (ms)", false),
        ("CPU (cores)", true),
        ("RSS (MiB)", true),
    ])
}
