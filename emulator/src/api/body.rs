//! Request-body validation that reports every bad field at once, as Gameye's 422 `violations` do.
//!
//! Bodies are parsed by hand from `serde_json::Value` rather than with `#[derive(Deserialize)]`
//! because serde stops at the first error and words it for Rust programmers.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::{ApiError, Violation};

/// A JSON object body being checked field by field.
pub struct Fields {
    object: Map<String, Value>,
    /// Everything found wrong so far.
    pub violations: Vec<Violation>,
}

impl Fields {
    /// Parses `bytes` as a JSON object whose keys are all in `allowed` (`additionalProperties: false`).
    pub fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Fields, ApiError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            let what = if bytes.is_empty() {
                "a JSON body is required".to_owned()
            } else {
                format!("is not valid JSON: {e}")
            };
            ApiError::invalid(vec![Violation::new("body", what)])
        })?;
        let Value::Object(object) = value else {
            return Err(ApiError::invalid(vec![Violation::new("body", "must be a JSON object")]));
        };
        let violations = object
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| Violation::new(k.clone(), "is not an allowed property"))
            .collect();
        Ok(Fields { object, violations })
    }

    /// A string field; `min_len` 1 rejects "" (the spec's `minLength: 1`).
    pub fn string(&mut self, name: &str, required: bool, min_len: usize) -> Option<String> {
        match self.object.remove(name) {
            None if required => self.violate(name, "is required"),
            None => None,
            Some(Value::String(s)) if s.chars().count() < min_len => self.violate(name, "must not be empty"),
            Some(Value::String(s)) => Some(s),
            Some(_) => self.violate(name, "must be a string"),
        }
    }

    /// A boolean field.
    pub fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.object.remove(name)? {
            Value::Bool(b) => Some(b),
            _ => self.violate(name, "must be a boolean"),
        }
    }

    /// An array of strings; `min_len` 1 rejects "" items.
    pub fn string_array(&mut self, name: &str, required: bool, min_len: usize) -> Option<Vec<String>> {
        let items = match self.object.remove(name) {
            None if required => return self.violate(name, "is required"),
            None => return None,
            Some(Value::Array(items)) => items,
            Some(_) => return self.violate(name, "must be an array of strings"),
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Value::String(s) if s.chars().count() >= min_len => out.push(s),
                Value::String(_) => self.push(format!("{name}[{i}]"), "must not be empty"),
                _ => self.push(format!("{name}[{i}]"), "must be a string"),
            }
        }
        Some(out)
    }

    /// An object of strings; `min_len` 1 rejects "" values.
    pub fn string_map(&mut self, name: &str, min_len: usize) -> Option<BTreeMap<String, String>> {
        let entries = match self.object.remove(name)? {
            Value::Object(entries) => entries,
            _ => return self.violate(name, "must be an object of strings"),
        };
        let mut out = BTreeMap::new();
        for (key, value) in entries {
            match value {
                Value::String(s) if s.chars().count() >= min_len => {
                    out.insert(key, s);
                }
                Value::String(_) => self.push(format!("{name}.{key}"), "must not be empty"),
                _ => self.push(format!("{name}.{key}"), "must be a string"),
            }
        }
        Some(out)
    }

    /// Takes a field's raw value for a custom check.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.object.remove(name)
    }

    /// Records a violation.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push(Violation::new(field, description));
    }

    fn violate<T>(&mut self, field: &str, description: &str) -> Option<T> {
        self.push(field, description);
        None
    }

    /// `Err(422)` when anything was wrong.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.violations.is_empty() { Ok(()) } else { Err(ApiError::invalid(self.violations)) }
    }
}
