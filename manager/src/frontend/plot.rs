//! Plot backfill: a topic's fields over a time window, decimated to a
//! bounded number of buckets with the min and max of each (so a spike
//! between two pixels still shows), computed as entries stream past: the
//! memory is the buckets, whatever the window holds.

/// Buckets when a request names none.
pub const DEFAULT_POINTS: usize = 600;
/// Most buckets one request may ask for.
pub const MAX_POINTS: usize = 10_000;
/// Most fields one request may ask for.
pub const MAX_FIELDS: usize = 32;

/// A field as the request names it: `name` or `name[i]` for an array element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    pub name: String,
    pub index: Option<usize>,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let (name, index) = match text.strip_suffix(']').and_then(|t| t.split_once('[')) {
            Some((name, i)) => (
                name,
                Some(
                    i.parse::<usize>()
                        .map_err(|_| format!("fields: {text:?} has an index that is not a number"))?,
                ),
            ),
            None => (text, None),
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "fields: {text:?} is not a field name (ASCII letters, digits and _, at most 64 bytes, optionally [index])"
            ));
        }
        Ok(FieldPath {
            name: name.to_string(),
            index,
        })
    }

    /// This field's number in a sample's fields (a JSON object); booleans count as 0 and 1.
    fn value(&self, fields: &serde_json::Map<String, serde_json::Value>) -> Option<f64> {
        let mut v = fields.get(&self.name)?;
        if let Some(i) = self.index {
            v = v.as_array()?.get(i)?;
        }
        match v {
            serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
            v => v.as_f64().filter(|x| x.is_finite()),
        }
    }
}

/// Checks a request's fields and points against the limits, naming them.
pub fn check(
    fields: &[String],
    points: Option<usize>,
    since: f64,
    until: f64,
) -> Result<Vec<FieldPath>, String> {
    if fields.is_empty() || fields.len() > MAX_FIELDS {
        return Err(format!(
            "fields: {} given, between 1 and MAX_FIELDS = {MAX_FIELDS} allowed",
            fields.len()
        ));
    }
    if let Some(p) = points {
        if p == 0 || p > MAX_POINTS {
            return Err(format!("points: {p} is outside 1 to MAX_POINTS = {MAX_POINTS}"));
        }
    }
    if !(since.is_finite() && until.is_finite() && since < until) {
        return Err(format!(
            "since: {since} must be a time before until: {until} (Unix seconds)"
        ));
    }
    fields.iter().map(|f| FieldPath::parse(f)).collect()
}

/// Per bucket, per field: a value, or `None` where the bucket has no number for it.
pub type Columns = Vec<Vec<Option<f64>>>;

/// The min/max buckets being filled.
pub struct Buckets {
    since: f64,
    width: f64,
    fields: Vec<FieldPath>,
    /// Per bucket, per field: (min, max).
    cells: Vec<Vec<Option<(f64, f64)>>>,
}

impl Buckets {
    pub fn new(fields: Vec<FieldPath>, since: f64, until: f64, points: usize) -> Buckets {
        Buckets {
            since,
            width: (until - since) / points as f64,
            cells: vec![vec![None; fields.len()]; points],
            fields,
        }
    }

    /// Adds one sample published at `t` (Unix seconds) with `fields` (its JSON object).
    pub fn add(&mut self, t: f64, fields: &str) {
        let Some(i) = self.bucket(t) else { return };
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(fields) else {
            return;
        };
        for (cell, field) in self.cells[i].iter_mut().zip(&self.fields) {
            if let Some(x) = field.value(&map) {
                *cell = Some(cell.map_or((x, x), |(lo, hi)| (lo.min(x), hi.max(x))));
            }
        }
    }

    fn bucket(&self, t: f64) -> Option<usize> {
        let i = ((t - self.since) / self.width).floor();
        (i >= 0.0 && (i as usize) < self.cells.len()).then_some(i as usize)
    }

    /// Bucket start times and per-bucket min and max of each field; empty buckets are left out.
    pub fn finish(self) -> (Vec<f64>, Columns, Columns) {
        let (mut t, mut min, mut max) = (Vec::new(), Vec::new(), Vec::new());
        for (i, cells) in self.cells.into_iter().enumerate() {
            if cells.iter().all(Option::is_none) {
                continue;
            }
            t.push(self.since + self.width * i as f64);
            min.push(cells.iter().map(|c| c.map(|(lo, _)| lo)).collect());
            max.push(cells.iter().map(|c| c.map(|(_, hi)| hi)).collect());
        }
        (t, min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_inside_a_bucket_survives_as_its_max() {
        let fields = check(&["x".into(), "a[1]".into()], Some(2), 0.0, 2.0).unwrap();
        let mut b = Buckets::new(fields, 0.0, 2.0, 2);
        b.add(0.1, r#"{"x":1.0,"a":[0,5]}"#);
        b.add(0.5, r#"{"x":100.0,"a":[0,6]}"#);
        b.add(0.9, r#"{"x":2.0,"a":[0,4]}"#);
        b.add(1.5, r#"{"x":-3,"a":[0]}"#);
        b.add(7.0, r#"{"x":1e9}"#); // outside the window
        let (t, min, max) = b.finish();
        assert_eq!(t, [0.0, 1.0]);
        assert_eq!(min[0], [Some(1.0), Some(4.0)]);
        assert_eq!(max[0], [Some(100.0), Some(6.0)]);
        assert_eq!(min[1], [Some(-3.0), None], "a missing element is null, not zero");
    }

    #[test]
    fn bad_requests_name_the_field_and_the_limit() {
        assert!(check(&[], None, 0.0, 1.0).unwrap_err().contains("MAX_FIELDS"));
        assert!(check(&["x".into()], Some(0), 0.0, 1.0)
            .unwrap_err()
            .contains("MAX_POINTS"));
        assert!(check(&["x".into()], None, 2.0, 1.0)
            .unwrap_err()
            .contains("since"));
        assert!(check(&["x y".into()], None, 0.0, 1.0)
            .unwrap_err()
            .contains("fields"));
        assert!(check(&["x[a]".into()], None, 0.0, 1.0)
            .unwrap_err()
            .contains("index"));
    }
}
