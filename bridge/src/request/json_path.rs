//! Naming the place in a JSON text where reading stopped, as `players[1].latencies.eu-west-1`.
//!
//! serde_json reports only a line and column for errors inside nested values; re-scanning the
//! text up to that point recovers the path without another dependency.

/// The path segment for an object key: `.key` (bare `key` when it starts the path), or
/// `["key"]` when the key holds anything but letters, digits, `-` and `_`.
pub(super) fn key_segment(key: &str, starts_path: bool) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match (bare, starts_path) {
        (true, true) => key.to_owned(),
        (true, false) => format!(".{key}"),
        (false, _) => format!("[{}]", serde_json::Value::from(key)),
    }
}

/// The byte offset of serde_json's 1-based `line` and byte `column` in `text`.
pub(super) fn offset_of(text: &[u8], line: usize, column: usize) -> usize {
    let line_start = match line {
        0 | 1 => 0,
        _ => text
            .iter()
            .enumerate()
            .filter(|&(_, &byte)| byte == b'\n')
            .nth(line - 2)
            .map_or(text.len(), |(index, _)| index + 1),
    };
    (line_start + column).min(text.len())
}

/// The path of the value being read after the first `offset` bytes of `text`; empty at the top
/// level. Tolerates invalid JSON: it only tracks brackets, keys, commas and strings.
pub(super) fn path_at(text: &[u8], offset: usize) -> String {
    let mut frames: Vec<Frame> = Vec::new();
    let mut string_start: Option<usize> = None;
    let mut escaped = false;
    for (index, &byte) in text[..offset.min(text.len())].iter().enumerate() {
        if let Some(start) = string_start {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                string_start = None;
                if let Some(Frame::Object { key, expecting_key }) = frames.last_mut()
                    && *expecting_key
                {
                    *key = Some(decode_key(&text[start..=index]));
                    *expecting_key = false;
                }
            }
            continue;
        }
        if byte.is_ascii_whitespace() || byte == b':' {
            continue;
        }
        if byte == b'}' || byte == b']' {
            frames.pop();
            continue;
        }
        if byte == b',' {
            match frames.last_mut() {
                Some(Frame::Object { key, expecting_key }) => {
                    *key = None;
                    *expecting_key = true;
                }
                Some(Frame::Array { index, started }) => {
                    *index += 1;
                    *started = false;
                }
                None => {}
            }
            continue;
        }
        // Anything else begins or continues a value.
        if let Some(Frame::Array { started, .. }) = frames.last_mut() {
            *started = true;
        }
        match byte {
            b'"' => string_start = Some(index),
            b'{' => frames.push(Frame::Object { key: None, expecting_key: true }),
            b'[' => frames.push(Frame::Array { index: 0, started: false }),
            _ => {}
        }
    }
    render(&frames)
}

enum Frame {
    Object { key: Option<String>, expecting_key: bool },
    Array { index: usize, started: bool },
}

fn render(frames: &[Frame]) -> String {
    let mut path = String::new();
    for frame in frames {
        match frame {
            Frame::Object { key: Some(key), .. } => path.push_str(&key_segment(key, path.is_empty())),
            Frame::Array { index, started: true } => path.push_str(&format!("[{index}]")),
            // Between members or before the first element: nothing deeper is being read.
            _ => break,
        }
    }
    path
}

fn decode_key(quoted: &[u8]) -> String {
    serde_json::from_slice(quoted)
        .unwrap_or_else(|_| String::from_utf8_lossy(&quoted[1..quoted.len() - 1]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path once reading has taken the marker's first byte, as serde_json reports errors.
    fn path_at_marker(text: &str, marker: &str) -> String {
        path_at(text.as_bytes(), text.find(marker).expect("marker in text") + 1)
    }

    #[test]
    fn follows_keys_and_indexes() {
        let text = r#"{"players": [{"id": "a"}, {"id": "b", "latencies": {"eu-west-1": X}}]}"#;
        assert_eq!(path_at_marker(text, "X"), "players[1].latencies.eu-west-1");
        assert_eq!(path_at_marker(text, r#""b""#), "players[1].id");
        assert_eq!(path_at_marker(text, r#"{"id": "a"}"#), "players[0]");
        assert_eq!(path_at_marker(text, "[{"), "players");
    }

    #[test]
    fn ignores_brackets_and_quotes_inside_strings() {
        let text = r#"{"a": "[{\"x", "b": [1, "],", X]}"#;
        assert_eq!(path_at_marker(text, "X"), "b[2]");
    }

    #[test]
    fn odd_keys_are_quoted() {
        let text = r#"{"env": {"my var.x": X}}"#;
        assert_eq!(path_at_marker(text, "X"), r#"env["my var.x"]"#);
        assert_eq!(key_segment("", false), r#"[""]"#);
    }

    #[test]
    fn a_closed_member_is_left_behind() {
        let text = r#"{"a": {"b": 1}, X"#;
        assert_eq!(path_at_marker(text, "X"), "");
    }

    #[test]
    fn line_and_column_become_an_offset() {
        let text = b"ab\ncd\nef";
        assert_eq!(offset_of(text, 1, 2), 2);
        assert_eq!(offset_of(text, 2, 1), 4);
        assert_eq!(offset_of(text, 3, 2), 8);
        assert_eq!(offset_of(text, 9, 0), 8);
    }
}
