//! Cache keys: SHA-256 over the server, the tool and the canonical JSON of the arguments
//! (object keys sorted, no insignificant whitespace), so that `{"a":1,"b":2}` and
//! `{ "b":2, "a":1 }` share a key.

use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    pub fn new(server: &str, tool: &str, arguments: &Value) -> Self {
        let mut hasher = Sha256::new();
        // Lengths first, so that no two (server, tool) pairs hash the same bytes.
        hasher.update((server.len() as u64).to_le_bytes());
        hasher.update(server.as_bytes());
        hasher.update((tool.len() as u64).to_le_bytes());
        hasher.update(tool.as_bytes());
        hasher.update(canonical_json(arguments).as_bytes());
        Self(hasher.finalize().into())
    }

    pub fn to_hex(self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({})", &self.to_hex()[..12])
    }
}

/// The arguments' canonical text: keys sorted by their UTF-8 bytes, no whitespace,
/// numbers and strings as serde_json writes them. Does not depend on the order a map
/// happens to keep.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn order_and_spacing_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"y":[1,2],"x":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str("{ \"b\" : { \"x\": null, \"y\": [1, 2] },\n \"a\": 1 }").unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":1,"b":{"x":null,"y":[1,2]}}"#);
        assert_eq!(CacheKey::new("s", "t", &a), CacheKey::new("s", "t", &b));
    }

    #[test]
    fn server_and_tool_are_part_of_the_key() {
        let args = json!({});
        assert_ne!(
            CacheKey::new("ab", "c", &args),
            CacheKey::new("a", "bc", &args)
        );
        assert_ne!(
            CacheKey::new("s", "t", &args),
            CacheKey::new("s", "u", &args)
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[a-z\\u{e9}\"\\\\ ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Writes `value` with object keys in the order `shuffle` picks and random spacing.
    fn scrambled(value: &Value, seed: &mut u64) -> String {
        let mut next = || {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *seed >> 33
        };
        fn go(value: &Value, next: &mut dyn FnMut() -> u64, out: &mut String) {
            let space = |next: &mut dyn FnMut() -> u64, out: &mut String| {
                for _ in 0..(next() % 3) {
                    out.push([' ', '\n', '\t'][(next() % 3) as usize]);
                }
            };
            match value {
                Value::Object(map) => {
                    let mut entries: Vec<_> = map.iter().collect();
                    for i in (1..entries.len()).rev() {
                        let j = (next() % (i as u64 + 1)) as usize;
                        entries.swap(i, j);
                    }
                    out.push('{');
                    for (i, (k, v)) in entries.into_iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        space(next, out);
                        out.push_str(&Value::String(k.clone()).to_string());
                        space(next, out);
                        out.push(':');
                        go(v, next, out);
                    }
                    space(next, out);
                    out.push('}');
                }
                Value::Array(items) => {
                    out.push('[');
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        space(next, out);
                        go(v, next, out);
                    }
                    out.push(']');
                }
                scalar => out.push_str(&scalar.to_string()),
            }
        }
        let mut out = String::new();
        go(value, &mut next, &mut out);
        out
    }

    proptest! {
        #[test]
        fn any_key_order_and_spacing_give_one_key(value in arb_json(), seed in any::<u64>()) {
            let mut seed = seed;
            let text = scrambled(&value, &mut seed);
            let reparsed: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(CacheKey::new("s", "t", &reparsed), CacheKey::new("s", "t", &value));
            // The canonical text is itself JSON for the same value.
            let canonical: Value = serde_json::from_str(&canonical_json(&value)).unwrap();
            prop_assert_eq!(canonical, value);
        }

        #[test]
        fn different_values_give_different_keys(a in arb_json(), b in arb_json()) {
            prop_assume!(a != b);
            prop_assert_ne!(CacheKey::new("s", "t", &a), CacheKey::new("s", "t", &b));
        }
    }
}
