//! How upstream tools (and prompts) are named at `/mcp`: `{prefix}__{name}`, where the
//! prefix is the server's name unless its `tool_prefix` says otherwise (`""` for none).
//! Exposed names stay within the specification's `[A-Za-z0-9_.-]`, 1 to 128 characters;
//! a name that cannot is withheld, never mangled. Names are resolved by lookup in the
//! catalogue, never by splitting, so an upstream tool whose own name holds `__` is fine.

/// Separates the prefix from the upstream's name.
pub const SEPARATOR: &str = "__";
/// The specification's bound on a tool name.
pub const MAX_NAME: usize = 128;
const MAX_PREFIX: usize = 64;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Checks a configured `tool_prefix`. Empty means no prefix. A prefix may not hold `__`
/// nor end in `_`, so that where it ends stays obvious to a person reading `p__tool`.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.len() > MAX_PREFIX {
        return Err(format!("must be at most {MAX_PREFIX} characters"));
    }
    if let Some(bad) = prefix.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "may hold only A-Z, a-z, 0-9, '_', '.' and '-', found {bad:?}"
        ));
    }
    if prefix.contains(SEPARATOR) || prefix.ends_with('_') {
        return Err("may not contain '__' nor end with '_'".to_owned());
    }
    Ok(())
}

/// The prefix a server's tools get: its name by default, none when configured empty.
pub fn effective_prefix<'a>(server: &'a str, configured: Option<&'a str>) -> Option<&'a str> {
    match configured {
        None => Some(server),
        Some("") => None,
        Some(p) => Some(p),
    }
}

/// The name an upstream prompt, resource or resource template is shown under: the same
/// `{prefix}__{name}` as tools, whatever characters the name holds (MCP constrains only
/// tool names; "Dynamic Text Resource" becomes `srv__Dynamic Text Resource`).
pub fn label(prefix: Option<&str>, name: &str) -> String {
    match prefix {
        Some(p) => format!("{p}{SEPARATOR}{name}"),
        None => name.to_owned(),
    }
}

/// The name an upstream tool is exposed under, or why it cannot be exposed.
pub fn expose(prefix: Option<&str>, name: &str) -> Result<String, String> {
    let exposed = match prefix {
        Some(p) => format!("{p}{SEPARATOR}{name}"),
        None => name.to_owned(),
    };
    if name.is_empty() {
        return Err("the upstream's name is empty".to_owned());
    }
    if exposed.len() > MAX_NAME {
        return Err(format!(
            "'{exposed}' is longer than the {MAX_NAME} characters MCP allows"
        ));
    }
    if let Some(bad) = exposed.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "the upstream's name '{name}' holds {bad:?}, which MCP names may not"
        ));
    }
    Ok(exposed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_prefix_is_the_server_name() {
        assert_eq!(effective_prefix("time", None), Some("time"));
        assert_eq!(effective_prefix("time", Some("")), None);
        assert_eq!(effective_prefix("time", Some("t")), Some("t"));
        assert_eq!(expose(Some("time"), "now").unwrap(), "time__now");
        assert_eq!(expose(None, "now").unwrap(), "now");
        // Other names take the same prefix whatever they hold; tools must fit MCP's set.
        assert_eq!(
            label(Some("a"), "Dynamic Text Resource"),
            "a__Dynamic Text Resource"
        );
        assert_eq!(label(None, "x y"), "x y");
        assert!(expose(Some("a"), "x y").is_err());
    }

    #[test]
    fn names_outside_the_spec_are_refused_with_the_reason() {
        assert!(expose(Some("s"), "has space").unwrap_err().contains("' '"));
        assert!(expose(Some("s"), "").is_err());
        let long = "x".repeat(126);
        assert!(expose(Some("s"), &long).unwrap_err().contains("128"));
        assert_eq!(expose(None, &"x".repeat(128)).unwrap().len(), 128);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("gh.v2-x").is_ok());
        assert!(validate_prefix("a__b").is_err());
        assert!(validate_prefix("a_").is_err());
        assert!(validate_prefix("a b").is_err());
        assert!(validate_prefix(&"p".repeat(65)).is_err());
    }

    proptest! {
        /// Whatever the upstream calls a tool, an exposed name is within the spec, and
        /// different upstream names under one prefix never meet in one exposed name.
        #[test]
        fn exposed_names_are_valid_and_distinct(
            prefix in proptest::option::of("[a-z0-9-]{1,64}"),
            a in "\\PC{0,140}",
            b in "\\PC{0,140}",
        ) {
            let (ea, eb) = (expose(prefix.as_deref(), &a), expose(prefix.as_deref(), &b));
            for name in [&ea, &eb].into_iter().flatten() {
                prop_assert!(!name.is_empty() && name.len() <= MAX_NAME);
                prop_assert!(name.chars().all(is_name_char));
            }
            if let (Ok(ea), Ok(eb)) = (&ea, &eb) {
                prop_assert_eq!(ea == eb, a == b);
            }
        }

        /// A valid prefix followed by the separator is recovered from any exposed name.
        #[test]
        fn the_prefix_can_be_read_back(prefix in "[A-Za-z0-9.-][A-Za-z0-9_.-]{0,20}[A-Za-z0-9.-]", name in "[A-Za-z0-9_.-]{1,60}") {
            prop_assume!(validate_prefix(&prefix).is_ok());
            let exposed = expose(Some(&prefix), &name).unwrap();
            let (p, rest) = exposed.split_once(SEPARATOR).unwrap();
            prop_assert_eq!(p, prefix.as_str());
            prop_assert_eq!(rest, name.as_str());
        }
    }
}
