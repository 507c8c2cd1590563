//! Finds the full key path at a position of a TOML document, so a parse
//! error can say `frontend.client_queue` where toml's own message shows
//! only the line.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The dotted key path (`frontend.client_queue`, `frontend.tokens[1]`) of
/// the innermost key or value whose span contains byte `offset` of `text`,
/// or `None` if the text does not parse or nothing there is a key.
pub(crate) fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let root = DeTable::parse(text).ok()?;
    let mut path = String::new();
    in_table(root.get_ref(), offset, &mut path).then_some(path)
}

fn in_table(table: &DeTable<'_>, offset: usize, path: &mut String) -> bool {
    for (key, value) in table {
        let len = path.len();
        *path = if path.is_empty() {
            quoted(key.get_ref())
        } else {
            crate::validate::key_path(path, key.get_ref())
        };
        if key.span().contains(&offset) {
            return true;
        }
        if in_value(value, offset, path) {
            return true;
        }
        path.truncate(len);
    }
    false
}

/// Tables are searched whatever their span: a table built from `[header]`
/// lines does not span its keys.
fn in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut String) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => in_table(table, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                if in_value(item, offset, path) {
                    return true;
                }
                path.truncate(len);
            }
            value.span().contains(&offset)
        }
        _ => value.span().contains(&offset),
    }
}

fn quoted(key: &str) -> String {
    // `key_path` quotes its last segment when needed; strip the leading dot.
    crate::validate::key_path("", key)[1..].to_string()
}
