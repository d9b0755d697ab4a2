//! Which rules apply to a request: path patterns ("/login", "/api/*", "/items/{id}") and methods,
//! and the route an `endpoint` key names. Both lean towards merging: "/LOGIN/", "//login" and
//! "/log%69n" reach the same handler in common frameworks, so they must not slip past "/login".

use crate::error::{Error, Result};

/// A named rule for a path pattern and a set of methods.
///
/// Patterns: exact ("/login"); "/api/*" for "/api" and everything below it; "*" for every path;
/// "{param}" or ":param" for exactly one segment. Methods: empty or `["*"]` for all, else a list
/// compared case-insensitively; a rule naming GET also covers HEAD, which frameworks route to the
/// GET handler.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteRule {
    pub name: String,
    pub path: String,
    /// Upper case, as given; empty means every method.
    pub methods: Vec<String>,
}

impl RouteRule {
    pub fn new(name: &str, path: &str, methods: &[&str]) -> Result<Self> {
        // The name goes into header policy names and metrics labels, so it stays plain.
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(Error::config(
                "rule name",
                name,
                "must be 1 to 64 characters of letters, digits, '-', '_', '.' or ':'",
            ));
        }
        let pattern = path.trim();
        validate_pattern(pattern).map_err(|reason| Error::config("route pattern", path, reason))?;
        let mut upper = Vec::with_capacity(methods.len());
        for m in methods {
            let m = m.trim();
            let token =
                !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(Error::config("HTTP method", m, "expected a method name such as GET, or \"*\""));
            }
            upper.push(m.to_ascii_uppercase());
        }
        Ok(RouteRule { name: name.to_string(), path: pattern.to_string(), methods: upper })
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.matches_method(method) && self.matches_path(path)
    }

    /// The pattern as a route template for `endpoint` keys ("/login", "/items/{id}"), or None
    /// for a wildcard pattern, which names many routes and so cannot stand for one.
    pub fn template(&self) -> Option<&str> {
        let wild = self.path == "*" || self.path.split('/').any(|s| s == "*");
        (!wild).then_some(self.path.as_str())
    }

    pub fn matches_method(&self, method: &str) -> bool {
        let method = method.trim();
        self.methods.is_empty()
            || self.methods.iter().any(|m| {
                m == "*" || m.eq_ignore_ascii_case(method) || (m == "GET" && method.eq_ignore_ascii_case("HEAD"))
            })
    }

    pub fn matches_path(&self, path: &str) -> bool {
        let pattern = self.path.trim();
        if pattern == "*" {
            return true;
        }
        // Query and fragment are not part of the route; empty segments ("//", a trailing "/") are
        // ignored, as most routers do.
        let path = path.split(['?', '#']).next().unwrap_or("");
        let mut request = path.split('/').filter(|s| !s.is_empty());
        for p in pattern.split('/').filter(|s| !s.is_empty()) {
            if p == "*" {
                return true;
            }
            match request.next() {
                Some(seg) if is_param(p) || same_segment(p, seg) => {}
                _ => return false,
            }
        }
        request.next().is_none()
    }
}

/// How a framework maps request paths to routes, for the `endpoint` key of a request that no
/// known route matched: every spelling the framework would route to one handler must give one
/// key. Spellings it would not route (a 404) may share that key too: they only cost their sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathStyle {
    /// "/Login" and "/login" are different routes.
    pub case_sensitive: bool,
    /// "/login/" and "/login" are different routes.
    pub strict_slash: bool,
}

impl PathStyle {
    /// Express's defaults: `case sensitive routing` and `strict routing` both off.
    pub const EXPRESS: PathStyle = PathStyle { case_sensitive: false, strict_slash: false };
    /// Starlette and FastAPI: case-sensitive; "/x/" is redirected to "/x" (`redirect_slashes`).
    pub const STARLETTE: PathStyle = PathStyle { case_sensitive: true, strict_slash: false };

    pub fn new(case_sensitive: bool, strict_slash: bool) -> Self {
        PathStyle { case_sensitive, strict_slash }
    }

    /// One spelling of a path: query and fragment dropped, percent-escapes decoded (servers
    /// such as uvicorn decode before routing; a client can escape any letter), empty and "."
    /// segments dropped, ".." applied, and per the style the case folded and a trailing slash
    /// dropped. Always starts with "/".
    pub fn normalise(&self, path: &str) -> String {
        let raw = path.split(['?', '#']).next().unwrap_or("");
        let bytes: Vec<u8> = decoded(raw).collect();
        let text = String::from_utf8_lossy(&bytes);
        let text = if self.case_sensitive { text } else { text.to_lowercase().into() };
        let mut segments: Vec<&str> = Vec::new();
        for seg in text.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        let mut out = String::with_capacity(text.len() + 1);
        for s in &segments {
            out.push('/');
            out.push_str(s);
        }
        if out.is_empty() || (self.strict_slash && text.ends_with('/')) {
            out.push('/');
        }
        out
    }
}

impl Default for PathStyle {
    /// Case-insensitive and not strict: the style that merges the most spellings.
    fn default() -> Self {
        PathStyle::EXPRESS
    }
}

fn validate_pattern(pattern: &str) -> std::result::Result<(), &'static str> {
    if pattern == "*" {
        return Ok(());
    }
    if !pattern.starts_with('/') {
        return Err("must start with '/' or be \"*\"");
    }
    if pattern.contains(['?', '#']) || pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a path without query, fragment or spaces");
    }
    let segments: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    for (i, s) in segments.iter().enumerate() {
        if s.contains('*') && (*s != "*" || i + 1 != segments.len()) {
            return Err("'*' may only be the whole last segment, as in \"/api/*\"");
        }
        if (s.starts_with('{') || s.ends_with('}')) && !is_param(s) {
            return Err("a parameter must be a whole segment, as in \"/items/{id}\"");
        }
        if s.starts_with(':') && !is_param(s) {
            return Err("a parameter needs a name, as in \"/items/:id\"");
        }
    }
    Ok(())
}

fn is_param(segment: &str) -> bool {
    (segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}'))
        || (segment.len() > 1 && segment.starts_with(':'))
}

/// Case-insensitive and after percent-decoding: a client can spell a segment many ways that a
/// server routes to the same handler.
fn same_segment(pattern: &str, segment: &str) -> bool {
    decoded(pattern).map(|b| b.to_ascii_lowercase()).eq(decoded(segment).map(|b| b.to_ascii_lowercase()))
}

fn decoded(s: &str) -> impl Iterator<Item = u8> + '_ {
    let b = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        let c = *b.get(i)?;
        if c == b'%' {
            if let (Some(h), Some(l)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
                i += 3;
                return Some(h << 4 | l);
            }
        }
        i += 1;
        Some(c)
    })
}

fn hex(c: &u8) -> Option<u8> {
    (*c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table() {
        // (pattern, methods, request method, request path, matches)
        let cases: &[(&str, &[&str], &str, &str, bool)] = &[
            ("/login", &[], "POST", "/login", true),
            ("/login", &[], "POST", "/login/", true),
            ("/login", &[], "POST", "//login", true),
            ("/login", &[], "POST", "/LOGIN", true),
            ("/login", &[], "POST", "/log%69n", true),
            ("/login", &[], "POST", "/login?next=/", true),
            ("/login", &[], "POST", "/login/extra", false),
            ("/login", &[], "POST", "/logins", false),
            ("/login", &[], "POST", "/", false),
            ("/login", &["POST"], "post", "/login", true),
            ("/login", &["POST"], "GET", "/login", false),
            ("/login", &["*"], "DELETE", "/login", true),
            ("/login", &["GET", "POST"], "HEAD", "/login", true),
            ("/login", &["POST"], "HEAD", "/login", false),
            ("/api/*", &[], "GET", "/api", true),
            ("/api/*", &[], "GET", "/api/", true),
            ("/api/*", &[], "GET", "/api/v1/items/3", true),
            ("/api/*", &[], "GET", "/apix", false),
            ("/api/*", &[], "GET", "/", false),
            ("*", &[], "GET", "/anything/at/all", true),
            ("*", &[], "GET", "", true),
            ("/", &[], "GET", "/", true),
            ("/", &[], "GET", "", true),
            ("/", &[], "GET", "/x", false),
            ("/items/{id}", &[], "GET", "/items/42", true),
            ("/items/{id}", &[], "GET", "/items/{id}", true),
            ("/items/{id}", &[], "GET", "/items", false),
            ("/items/{id}", &[], "GET", "/items/42/edit", false),
            ("/items/:id/edit", &[], "GET", "/items/42/edit", true),
            ("/items/:id/edit", &[], "GET", "/items/42/view", false),
            ("/users/{uid}/posts/*", &[], "GET", "/users/7/posts/1/comments", true),
            ("/a%20b", &[], "GET", "/a b", true),
            ("/bad%zz", &[], "GET", "/bad%zz", true),
            ("/x", &[], "GET", "/x%", false), // a lone '%' is kept as a byte, not dropped
        ];
        for (pattern, methods, method, path, want) in cases {
            let rule = RouteRule::new("r", pattern, methods).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(rule.matches(method, path), *want, "{method} {path} against {methods:?} {pattern}");
        }
    }

    #[test]
    fn templates() {
        for (pattern, want) in [
            ("/login", Some("/login")),
            ("/items/{id}", Some("/items/{id}")),
            ("/items/:id/edit", Some("/items/:id/edit")),
            ("/", Some("/")),
            ("*", None),
            ("/api/*", None),
        ] {
            assert_eq!(RouteRule::new("r", pattern, &[]).unwrap().template(), want, "{pattern}");
        }
    }

    #[test]
    fn path_normalisation_table() {
        // (path, Express style, Starlette style)
        let cases: &[(&str, &str, &str)] = &[
            ("/login", "/login", "/login"),
            ("/LOGIN", "/login", "/LOGIN"),
            ("/Login/", "/login", "/Login"),
            ("//login", "/login", "/login"),
            ("/login//", "/login", "/login"),
            ("/log%69n", "/login", "/login"),
            ("/LOG%49N", "/login", "/LOGIN"),
            ("/login?next=/x", "/login", "/login"),
            ("/login#top", "/login", "/login"),
            ("/./login", "/login", "/login"),
            ("/x/../login", "/login", "/login"),
            ("/../../login", "/login", "/login"),
            ("/a%2Fb", "/a/b", "/a/b"),
            ("/caf%C3%A9", "/café", "/café"),
            ("/CAF%C3%89", "/café", "/CAFÉ"),
            ("/bad%zz", "/bad%zz", "/bad%zz"),
            ("/bad%ff", "/bad\u{fffd}", "/bad\u{fffd}"),
            ("", "/", "/"),
            ("/", "/", "/"),
            ("?x", "/", "/"),
            ("items/2", "/items/2", "/items/2"),
        ];
        for (path, express, starlette) in cases {
            assert_eq!(PathStyle::EXPRESS.normalise(path), *express, "express {path}");
            assert_eq!(PathStyle::STARLETTE.normalise(path), *starlette, "starlette {path}");
        }
        let strict = PathStyle::new(true, true);
        assert_eq!(strict.normalise("/login/"), "/login/");
        assert_eq!(strict.normalise("/login//"), "/login/");
        assert_eq!(strict.normalise("/login"), "/login");
        assert_eq!(strict.normalise("/"), "/");
    }

    #[test]
    fn bad_rules_name_the_value() {
        let cases: &[(&str, &str, &[&str], &str)] = &[
            ("", "/x", &[], "\"\""),
            ("has space", "/x", &[], "\"has space\""),
            ("r", "login", &[], "\"login\""),
            ("r", "/api/*/x", &[], "\"/api/*/x\""),
            ("r", "/api*", &[], "\"/api*\""),
            ("r", "/items/{id", &[], "\"/items/{id\""),
            ("r", "/items/{}", &[], "\"/items/{}\""),
            ("r", "/items/:", &[], "\"/items/:\""),
            ("r", "/x?y=1", &[], "\"/x?y=1\""),
            ("r", "/x", &["GE T"], "\"GE T\""),
            ("r", "/x", &[""], "\"\""),
        ];
        for (name, path, methods, named) in cases {
            let err = RouteRule::new(name, path, methods).expect_err(path);
            assert!(err.to_string().contains(named), "{name} {path} {methods:?}: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::Config);
        }
    }

    #[test]
    fn fields_are_normalised() {
        let r = RouteRule::new("login", " /login ", &["post", " Get "]).unwrap();
        assert_eq!((r.name.as_str(), r.path.as_str()), ("login", "/login"));
        assert_eq!(r.methods, ["POST", "GET"]);
    }
}
