//! A key's allow-list: globs over `server/tool` (`*` any run of characters, `?` one), e.g.
//! `github/*`, `*/read_*`, `time/now`. An empty list allows everything.

use std::fmt;

use crate::glob::matches as glob;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((server, tool)) = text.split_once('/') else {
            return Err(format!("'{text}' is not server/tool, e.g. 'github/*'"));
        };
        if server.is_empty() || tool.is_empty() || tool.contains('/') {
            return Err(format!("'{text}' is not server/tool, e.g. 'github/*'"));
        }
        if text.len() > 256 || text.chars().any(char::is_control) {
            return Err("a pattern is at most 256 printable characters".to_owned());
        }
        Ok(Self {
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, server: &str, tool: &str) -> bool {
        let (ps, pt) = self.text.split_once('/').expect("checked at parse");
        glob(ps, server) && glob(pt, tool)
    }

    /// Whether some tool of `server` may match: for filtering per-server events.
    pub fn covers_server(&self, server: &str) -> bool {
        let (ps, _) = self.text.split_once('/').expect("checked at parse");
        glob(ps, server)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A whole allow-list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(pub Vec<Pattern>);

impl AllowList {
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        items
            .iter()
            .map(|i| Pattern::parse(i.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn allows(&self, server: &str, tool: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p.matches(server, tool))
    }

    pub fn allows_server(&self, server: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p.covers_server(server))
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|p| p.text.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    #[test]
    fn globs_match_server_and_tool_separately() {
        assert!(p("github/*").matches("github", "create_issue"));
        assert!(!p("github/*").matches("gitlab", "create_issue"));
        assert!(p("*/read_*").matches("fs", "read_file"));
        assert!(!p("*/read_*").matches("fs", "write_file"));
        assert!(p("time/n?w").matches("time", "now"));
        assert!(p("*/*").matches("a", "b"));
        assert!(!p("a*/x").matches("b", "x"));
        assert!(p("a*b*c/x").matches("aXbYbZc", "x"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in ["github", "/x", "x/", "a/b/c", ""] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_list_allows_all_and_a_list_allows_what_it_names() {
        assert!(AllowList::default().allows("any", "thing"));
        let list = AllowList::parse(&["time/*"]).unwrap();
        assert!(list.allows("time", "now"));
        assert!(!list.allows("github", "now"));
        assert!(list.allows_server("time") && !list.allows_server("github"));
    }

    proptest! {
        /// Any text parses or is refused; a parsed pattern matches the literal it is.
        #[test]
        fn parsing_never_panics_and_literals_match_themselves(
            server in "[a-z0-9-]{1,20}", tool in "[A-Za-z0-9_.-]{1,40}", any in "\\PC{0,80}",
        ) {
            let _ = Pattern::parse(&any);
            let literal = Pattern::parse(&format!("{server}/{tool}")).unwrap();
            prop_assert!(literal.matches(&server, &tool));
            let wildcard = p(&format!("{server}/*"));
            prop_assert!(wildcard.matches(&server, &tool));
        }

        /// A long run of stars against a long text stays fast (no exponential backtracking).
        #[test]
        fn stars_do_not_explode(n in 1usize..40, text in "a{0,200}") {
            let pattern = format!("{}/x", "*a".repeat(n));
            // `*a` n times matches exactly the texts of at least n a's, and answers at all:
            // a backtracking matcher would take exponential time here.
            assert_eq!(p(&pattern).matches(&text, "x"), text.len() >= n);
        }
    }
}
