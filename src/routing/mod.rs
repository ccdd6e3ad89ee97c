//! The compiled route table: given a request's host, path, method and headers, which
//! route serves it.
//!
//! Built once per configuration. Precedence, most specific first:
//! 1. host: routes for the exact host, then wildcard hosts (`*.example.com`, the longest
//!    suffix first), then routes without a host;
//! 2. within one host: exact paths, then templated paths (`/users/{id}`), then path
//!    prefixes, the longest first;
//! 3. routes with the same path pattern are tried in file order, and the first whose
//!    methods and headers match wins.
//!
//! Lookups are hash lookups and one matchit search per host table; prefixes are found by
//! walking the request path's segment boundaries, so no request scans the route list.

mod rewrite;

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

pub use matchit::Params;
pub use rewrite::{Rewrite, RewriteError};

/// Which hosts a route answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One host name, lower case, no port.
    Exact(String),
    /// `*.example.com`, stored as the suffix `example.com`; matches any name under it.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `api.example.com` or `*.example.com`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        if let Some(suffix) = lower.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(format!(
                    "invalid wildcard host {text:?}; write e.g. *.example.com"
                ));
            }
            return Ok(HostPattern::Wildcard(suffix.to_owned()));
        }
        if lower.is_empty() || lower.contains(['*', '/', ' ', ':']) {
            return Err(format!(
                "invalid host {text:?}; write a name such as api.example.com or *.example.com, without port"
            ));
        }
        Ok(HostPattern::Exact(lower))
    }
}

/// Which paths a route answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// This path only.
    Exact(String),
    /// A matchit template with `{param}` segments and an optional trailing `{*rest}`.
    Template(String),
    /// This path and everything below it, segment-aware; stored without a trailing
    /// slash, the root as the empty string.
    Prefix(String),
}

impl PathPattern {
    /// The pattern of `match.path`: a template when it has `{...}`, else exact.
    pub fn path(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path {text:?} must start with `/`"));
        }
        if text.contains(['{', '}']) {
            template_params(text)?;
            Ok(PathPattern::Template(text.to_owned()))
        } else {
            Ok(PathPattern::Exact(text.to_owned()))
        }
    }

    /// The pattern of `match.path_prefix`.
    pub fn prefix(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path_prefix {text:?} must start with `/`"));
        }
        if text.contains(['{', '}', '?', '#']) {
            return Err(format!(
                "path_prefix {text:?} must be a plain path; use `path` for templates"
            ));
        }
        Ok(PathPattern::Prefix(text.trim_end_matches('/').to_owned()))
    }

    /// The names a template binds (`{id}` gives `id`, `{*rest}` gives `rest`).
    pub fn params(&self) -> Vec<String> {
        match self {
            PathPattern::Template(t) => template_params(t).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// Parameter names of a path template, or why the template is malformed.
fn template_params(template: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("unbalanced `}}` in path template {template:?}"));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in path template {template:?}"))?;
        let name = after[..close].trim_start_matches('*');
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "parameter `{{{}}}` in {template:?} must be a name of letters, digits and `_`",
                &after[..close]
            ));
        }
        if names.iter().any(|n| n == name) {
            return Err(format!("parameter `{name}` appears twice in {template:?}"));
        }
        names.push(name.to_owned());
        rest = &after[close + 1..];
    }
    Ok(names)
}

/// What a route requires of a request beyond its path.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub host: Option<HostPattern>,
    pub path: PathPattern,
    /// `None`: any method.
    pub methods: Option<Vec<Method>>,
    /// Each header must be present with exactly this value.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The methods a route can restrict to, as bits; others match only unrestricted routes.
const KNOWN_METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::TRACE,
];

const GET_BIT: u16 = 1 << 0;
const HEAD_BIT: u16 = 1 << 1;

fn method_bit(method: &Method) -> u16 {
    KNOWN_METHODS
        .iter()
        .position(|m| m == method)
        .map_or(0, |i| 1 << i)
}

/// A set of methods, for `405 Allow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MethodSet(u16);

impl MethodSet {
    const ALL: MethodSet = MethodSet((1 << KNOWN_METHODS.len()) - 1);

    pub fn iter(self) -> impl Iterator<Item = &'static Method> {
        KNOWN_METHODS
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, m)| m)
    }

    /// The value of an `Allow` header listing these methods.
    pub fn allow_header(self) -> HeaderValue {
        let list: Vec<&str> = self.iter().map(Method::as_str).collect();
        HeaderValue::from_str(&list.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

struct Predicate {
    methods: MethodSet,
    headers: Vec<(HeaderName, HeaderValue)>,
}

enum Verdict {
    Match,
    WrongMethod(MethodSet),
    NoMatch,
}

impl Predicate {
    fn check(&self, method_bit: u16, headers: &HeaderMap) -> Verdict {
        let headers_match = self
            .headers
            .iter()
            .all(|(name, value)| headers.get_all(name).iter().any(|v| v == value));
        if !headers_match {
            Verdict::NoMatch
        } else if self.methods == MethodSet::ALL
            || self.methods.0 & method_bit != 0
            // HEAD is GET without the body (RFC 9110 §9.3.2): a GET route answers it.
            || (method_bit == HEAD_BIT && self.methods.0 & GET_BIT != 0)
        {
            Verdict::Match
        } else {
            Verdict::WrongMethod(self.methods)
        }
    }
}

/// The routes of one host (or of no host), by path.
#[derive(Default)]
struct PathTable {
    exact: HashMap<Box<str>, Vec<usize>>,
    templates: matchit::Router<usize>,
    template_candidates: Vec<Vec<usize>>,
    template_index: HashMap<String, usize>,
    prefixes: HashMap<Box<str>, Vec<usize>>,
}

/// The result of a lookup.
pub enum Lookup<'r, 'p> {
    /// Route index into the configuration's routes, and the template's captures.
    Matched {
        route: usize,
        params: Option<Params<'r, 'p>>,
    },
    /// Some route has this path but none allows the method.
    MethodNotAllowed(MethodSet),
    NotFound,
}

/// Why a route table could not be built: the route index, what is wrong, and the
/// earlier route it conflicts with (when there is one) with why. The texts name no
/// route: the caller knows how routes are named and located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    pub route: usize,
    pub message: String,
    /// The route in the way, and why the two cannot be told apart.
    pub conflict: Option<(usize, String)>,
}

/// All routes, compiled for lookup.
pub struct RouteTable {
    predicates: Vec<Predicate>,
    exact_hosts: HashMap<String, PathTable>,
    wildcard_hosts: HashMap<String, PathTable>,
    any_host: PathTable,
}

impl RouteTable {
    /// Compiles `routes`; every conflict is reported, not only the first.
    pub fn build(routes: &[RouteSpec]) -> Result<Self, Vec<TableError>> {
        let mut table = RouteTable {
            predicates: Vec::with_capacity(routes.len()),
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            any_host: PathTable::default(),
        };
        let mut errors = Vec::new();
        for (index, spec) in routes.iter().enumerate() {
            let methods = match &spec.methods {
                None => MethodSet::ALL,
                Some(list) => MethodSet(list.iter().fold(0, |bits, m| bits | method_bit(m))),
            };
            table.predicates.push(Predicate {
                methods,
                headers: spec.headers.clone(),
            });
            let paths = match &spec.host {
                None => &mut table.any_host,
                Some(HostPattern::Exact(host)) => {
                    table.exact_hosts.entry(host.clone()).or_default()
                }
                Some(HostPattern::Wildcard(suffix)) => {
                    table.wildcard_hosts.entry(suffix.clone()).or_default()
                }
            };
            if let Err((message, conflict)) = paths.insert(&spec.path, index, routes) {
                errors.push(TableError {
                    route: index,
                    message,
                    conflict,
                });
            }
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    /// Finds the route for a request. `host` is the request's host without port, in
    /// any case; `path` excludes the query.
    pub fn lookup<'r, 'p>(
        &'r self,
        host: Option<&str>,
        path: &'p str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Lookup<'r, 'p> {
        let bit = method_bit(method);
        let mut allowed = MethodSet::default();
        if let Some(host) =
            host.filter(|_| !(self.exact_hosts.is_empty() && self.wildcard_hosts.is_empty()))
        {
            let lowered;
            let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                lowered = host.to_ascii_lowercase();
                lowered.as_str()
            } else {
                host
            };
            if let Some(paths) = self.exact_hosts.get(host) {
                if let Some(found) = self.search(paths, path, bit, headers, &mut allowed) {
                    return found;
                }
            }
            if !self.wildcard_hosts.is_empty() {
                let mut rest = host;
                while let Some(dot) = rest.find('.') {
                    rest = &rest[dot + 1..];
                    if let Some(paths) = self.wildcard_hosts.get(rest) {
                        if let Some(found) = self.search(paths, path, bit, headers, &mut allowed) {
                            return found;
                        }
                    }
                }
            }
        }
        if let Some(found) = self.search(&self.any_host, path, bit, headers, &mut allowed) {
            return found;
        }
        if allowed == MethodSet::default() {
            Lookup::NotFound
        } else {
            Lookup::MethodNotAllowed(allowed)
        }
    }

    fn search<'r, 'p>(
        &'r self,
        paths: &'r PathTable,
        path: &'p str,
        bit: u16,
        headers: &HeaderMap,
        allowed: &mut MethodSet,
    ) -> Option<Lookup<'r, 'p>> {
        let mut first_match = |candidates: &[usize]| {
            candidates.iter().copied().find(|&route| {
                match self.predicates[route].check(bit, headers) {
                    Verdict::Match => true,
                    Verdict::WrongMethod(methods) => {
                        allowed.0 |= methods.0;
                        false
                    }
                    Verdict::NoMatch => false,
                }
            })
        };
        if let Some(candidates) = paths.exact.get(path) {
            if let Some(route) = first_match(candidates) {
                return Some(Lookup::Matched {
                    route,
                    params: None,
                });
            }
        }
        if !paths.template_candidates.is_empty() {
            if let Ok(found) = paths.templates.at(path) {
                if let Some(route) = first_match(&paths.template_candidates[*found.value]) {
                    return Some(Lookup::Matched {
                        route,
                        params: Some(found.params),
                    });
                }
            }
        }
        if !paths.prefixes.is_empty() {
            let mut end = path.trim_end_matches('/').len();
            loop {
                if let Some(candidates) = paths.prefixes.get(&path[..end]) {
                    if let Some(route) = first_match(candidates) {
                        return Some(Lookup::Matched {
                            route,
                            params: None,
                        });
                    }
                }
                if end == 0 {
                    break;
                }
                end = path[..end].rfind('/').unwrap_or(0);
            }
        }
        None
    }
}

impl PathTable {
    fn insert(
        &mut self,
        pattern: &PathPattern,
        route: usize,
        all: &[RouteSpec],
    ) -> Result<(), (String, Option<(usize, String)>)> {
        match pattern {
            PathPattern::Exact(path) => {
                self.exact
                    .entry(path.as_str().into())
                    .or_default()
                    .push(route);
            }
            PathPattern::Prefix(prefix) => {
                self.prefixes
                    .entry(prefix.as_str().into())
                    .or_default()
                    .push(route);
            }
            PathPattern::Template(template) => {
                if let Some(&slot) = self.template_index.get(template) {
                    self.template_candidates[slot].push(route);
                    return Ok(());
                }
                let slot = self.template_candidates.len();
                self.templates.insert(template.clone(), slot).map_err(|e| {
                    // The route whose template is in the way: one of the same shape, or
                    // else the first that matchit cannot hold beside this one.
                    let other = self.template_candidates.iter().flatten().copied().find(|&r| {
                        matches!(&all[r].path, PathPattern::Template(t) if conflicts(t, template))
                    }).or_else(|| self.template_candidates.iter().flatten().copied().find(|&r| {
                        let PathPattern::Template(t) = &all[r].path else { return false };
                        let mut pair = matchit::Router::new();
                        pair.insert(t.clone(), 0usize).is_ok() && pair.insert(template.clone(), 1).is_err()
                    }));
                    match other.map(|r| (r, &all[r].path)) {
                        Some((r, PathPattern::Template(t))) => {
                            let reason = if conflicts(t, template) && !format!("{t}{template}").contains("{*") {
                                "the same path cannot bind two sets of parameter names; use the same names, or a different literal segment"
                            } else {
                                "the route table cannot tell them apart (a parameter and a catch-all, or a parameter inside a segment, at the same place)"
                            };
                            (format!("path template {template:?} conflicts with {t:?}"), Some((r, reason.to_owned())))
                        }
                        _ => (format!("invalid path template {template:?}: {e}"), None),
                    }
                })?;
                self.template_candidates.push(vec![route]);
                self.template_index.insert(template.clone(), slot);
            }
        }
        Ok(())
    }
}

/// Whether two templates have the same shape (same segments, parameters in the same
/// places), which matchit cannot hold side by side.
fn conflicts(a: &str, b: &str) -> bool {
    let shape = |t: &str| -> Vec<String> {
        t.split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "{}".to_owned()
                } else {
                    s.to_owned()
                }
            })
            .collect()
    };
    shape(a) == shape(b)
}

/// Route indices in the order lookups consider them: exact hosts, wildcard hosts
/// (longest suffix first), no host; within each, exact paths, templates, then prefixes
/// (longest first); ties in file order.
pub fn match_order(routes: &[&RouteSpec]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..routes.len()).collect();
    order.sort_by_key(|&i| {
        let spec = routes[i];
        let host = match &spec.host {
            Some(HostPattern::Exact(h)) => (0, h.clone()),
            Some(HostPattern::Wildcard(s)) => (1, format!("{:09}{s}", usize::MAX / 2 - s.len())),
            None => (2, String::new()),
        };
        let path = match &spec.path {
            PathPattern::Exact(_) => (0, 0),
            PathPattern::Template(_) => (1, 0),
            PathPattern::Prefix(p) => (2, usize::MAX - p.len()),
        };
        (host, path, i)
    });
    order
}

/// A one-line description of what a route matches, for `portcullis check`.
pub fn describe(spec: &RouteSpec) -> String {
    let mut text = match &spec.methods {
        Some(methods) => methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(","),
        None => "*".to_owned(),
    };
    text.push(' ');
    match &spec.host {
        Some(HostPattern::Exact(h)) => text.push_str(h),
        Some(HostPattern::Wildcard(s)) => {
            text.push_str("*.");
            text.push_str(s);
        }
        None => {}
    }
    match &spec.path {
        PathPattern::Exact(p) | PathPattern::Template(p) => text.push_str(p),
        PathPattern::Prefix(p) => {
            text.push_str(if p.is_empty() { "/" } else { p });
            text.push_str("**");
        }
    }
    for (name, value) in &spec.headers {
        text.push_str(&format!(" [{name}: {}]", value.to_str().unwrap_or("?")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host: Option<&str>, path: PathPattern, methods: Option<Vec<Method>>) -> RouteSpec {
        RouteSpec {
            host: host.map(|h| HostPattern::parse(h).expect("valid host")),
            path,
            methods,
            headers: Vec::new(),
        }
    }

    fn route_of(
        table: &RouteTable,
        host: Option<&str>,
        path: &str,
        method: Method,
    ) -> Option<usize> {
        match table.lookup(host, path, &method, &HeaderMap::new()) {
            Lookup::Matched { route, .. } => Some(route),
            _ => None,
        }
    }

    #[test]
    fn match_order_lists_routes_as_lookups_try_them() {
        let routes = [
            spec(None, PathPattern::prefix("/api").expect("ok"), None),
            spec(None, PathPattern::prefix("/api/users").expect("ok"), None),
            spec(
                None,
                PathPattern::path("/api/users/{id}").expect("ok"),
                None,
            ),
            spec(None, PathPattern::path("/api/users/me").expect("ok"), None),
            spec(
                Some("*.example.com"),
                PathPattern::prefix("/").expect("ok"),
                None,
            ),
            spec(
                Some("api.example.com"),
                PathPattern::prefix("/").expect("ok"),
                None,
            ),
            spec(
                Some("*.b.example.com"),
                PathPattern::prefix("/").expect("ok"),
                None,
            ),
        ];
        let routes: Vec<&RouteSpec> = routes.iter().collect();
        assert_eq!(match_order(&routes), vec![5, 6, 4, 3, 2, 1, 0]);
    }

    #[test]
    fn most_specific_path_wins() {
        let table = RouteTable::build(&[
            spec(None, PathPattern::prefix("/api").expect("ok"), None),
            spec(None, PathPattern::prefix("/api/users").expect("ok"), None),
            spec(
                None,
                PathPattern::path("/api/users/{id}").expect("ok"),
                None,
            ),
            spec(None, PathPattern::path("/api/users/me").expect("ok"), None),
        ])
        .expect("builds");
        assert_eq!(
            route_of(&table, None, "/api/users/me", Method::GET),
            Some(3)
        );
        assert_eq!(route_of(&table, None, "/api/users/7", Method::GET), Some(2));
        assert_eq!(
            route_of(&table, None, "/api/users/7/orders", Method::GET),
            Some(1)
        );
        assert_eq!(route_of(&table, None, "/api/users", Method::GET), Some(1));
        assert_eq!(route_of(&table, None, "/api/usersx", Method::GET), Some(0));
        assert_eq!(route_of(&table, None, "/apix", Method::GET), None);
    }

    #[test]
    fn host_routes_come_first_and_fall_through() {
        let table = RouteTable::build(&[
            spec(None, PathPattern::prefix("/").expect("ok"), None),
            spec(
                Some("*.example.com"),
                PathPattern::prefix("/").expect("ok"),
                Some(vec![Method::GET]),
            ),
            spec(
                Some("api.example.com"),
                PathPattern::prefix("/").expect("ok"),
                Some(vec![Method::GET]),
            ),
        ])
        .expect("builds");
        assert_eq!(
            route_of(&table, Some("API.example.com"), "/x", Method::GET),
            Some(2)
        );
        assert_eq!(
            route_of(&table, Some("a.b.example.com"), "/x", Method::GET),
            Some(1)
        );
        assert_eq!(
            route_of(&table, Some("example.com"), "/x", Method::GET),
            Some(0)
        );
        assert_eq!(
            route_of(&table, Some("api.example.com"), "/x", Method::POST),
            Some(0)
        );
    }

    #[test]
    fn wrong_method_reports_allowed_methods() {
        let table = RouteTable::build(&[
            spec(
                None,
                PathPattern::path("/a").expect("ok"),
                Some(vec![Method::GET]),
            ),
            spec(
                None,
                PathPattern::path("/a").expect("ok"),
                Some(vec![Method::POST]),
            ),
        ])
        .expect("builds");
        assert_eq!(
            route_of(&table, None, "/a", Method::HEAD),
            Some(0),
            "HEAD follows GET"
        );
        match table.lookup(None, "/a", &Method::DELETE, &HeaderMap::new()) {
            Lookup::MethodNotAllowed(allow) => assert_eq!(allow.allow_header(), "GET, POST"),
            _ => panic!("expected 405"),
        }
        assert!(matches!(
            table.lookup(None, "/b", &Method::GET, &HeaderMap::new()),
            Lookup::NotFound
        ));
    }

    #[test]
    fn conflicting_templates_are_reported() {
        let errors = RouteTable::build(&[
            spec(None, PathPattern::path("/u/{id}").expect("ok"), None),
            spec(None, PathPattern::path("/u/{name}").expect("ok"), None),
        ])
        .err()
        .expect("conflict");
        assert_eq!(errors[0].route, 1);
        assert_eq!(
            errors[0].conflict.as_ref().map(|(other, _)| *other),
            Some(0)
        );
        assert!(
            errors[0].message.contains("conflicts with \"/u/{id}\""),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn templates_are_validated() {
        assert!(PathPattern::path("/u/{id").is_err());
        assert!(PathPattern::path("/u/{a}/{a}").is_err());
        assert!(PathPattern::path("users").is_err());
        assert_eq!(
            PathPattern::path("/u/{id}/{*rest}").expect("ok").params(),
            vec!["id".to_owned(), "rest".to_owned()]
        );
    }
}
