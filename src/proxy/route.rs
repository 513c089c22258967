//! Routing (nginx's `server_name` + `location`): which route a request takes, by its host
//! and the prefix of its path; each route has its own pool of backends and its own rewrite.
//!
//! As nginx does, the host chooses first and the path within it: the routes of an exact host
//! (`chat.example`), else those of the longest matching wildcard (`*.example`), else those for
//! any host; among the chosen host's routes, the longest prefix that starts the path wins. A
//! request whose host has routes, none of which matches its path, gets 404: it does not fall
//! back to the routes for any host (add a `/` route to that host for that). The default route
//! (the backends given to the builder itself) is the route for any host and `/`.
//!
//! Matching is on the request as it arrived, before any rewrite: the host of `Host` (or of
//! an absolute-form target or HTTP/2 `:authority`) without its port, ignoring ASCII case and
//! a trailing dot, and the path as sent (no percent-decoding, as the rewriter's prefixes; a
//! target without a path, `*` or an authority, as `/`).
//! A prefix ending in `/` also takes the path without that slash (`/ws` for `/ws/`), as the
//! rewriter's [`strip_prefix`](crate::handshake::RewriteConfig::strip_prefix) does, unless
//! another route's prefix is that path itself (`/ws`).

use std::fmt;
use std::str::FromStr;

use http::header::HOST;
use http::Request;

use super::pool::{BackendsBuilder, Pool};
use crate::error::BuildError;
use crate::handshake::{RewriteConfig, Rewriter};

/// A route: the requests for a host and a path prefix, and the backends (with their own
/// rewrite) that serve them. nginx's `server { server_name HOST; location PREFIX { proxy_pass
/// ...; } }`. Added with [`ProxyBuilder::route`](crate::ProxyBuilder::route); see there for
/// how a request finds its route.
///
/// `Route` also parses the proxy example's `--route` syntax, `HOST/PREFIX=BACKEND[,BACKEND...]`:
/// `HOST` is a name (`chat.example`), a wildcard (`*.example`: any name ending in
/// `.example`) or `*` or nothing for any host; `PREFIX` starts with the `/` that ends `HOST`
/// (and must not hold an `=`); the backends are addresses as
/// [`ProxyBuilder::backend`](crate::ProxyBuilder::backend) takes them.
///
/// # Examples
///
/// ```
/// use wsrelay::handshake::RewriteConfig;
/// use wsrelay::{Proxy, Route};
///
/// // nginx: server { server_name chat.example; location /ws/ { proxy_pass http://chat/; } }
/// //        server { listen 80 default_server; location / { proxy_pass http://app; } }
/// let proxy = Proxy::builder()
///     .backend("10.0.0.9:8080")
///     .route(
///         Route::new()
///             .host("chat.example")
///             .prefix("/ws/")
///             .backend("10.0.0.5:9000")
///             .backend("10.0.0.6:9000")
///             .rewrite(RewriteConfig::new().strip_prefix("/ws/")),
///     )
///     .route("*.example/live/=10.0.0.7:9000".parse()?)
///     .build()?;
/// # drop(proxy);
/// # Ok::<(), wsrelay::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Route {
    host: String,
    prefix: String,
    backends: Vec<String>,
    rewrite: Option<RewriteConfig>,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            host: String::new(),
            prefix: "/".to_owned(),
            backends: Vec::new(),
            rewrite: None,
        }
    }
}

impl Route {
    /// A route for any host and every path (`/`), with no backend yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The host this route serves (nginx `server_name`): a name (`chat.example`), a wildcard
    /// (`*.example`, any name that ends in `.example`, not `example` itself), or `*` or `""`
    /// for any host. Without a port; case does not matter. Checked by
    /// [`build`](crate::ProxyBuilder::build). Default: any host.
    pub fn host(mut self, pattern: impl Into<String>) -> Self {
        self.host = pattern.into();
        self
    }

    /// The path prefix this route serves (nginx `location PREFIX`): it must start with `/`.
    /// Checked by [`build`](crate::ProxyBuilder::build). Default: `/`, every path.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Adds a backend to this route's pool (as
    /// [`ProxyBuilder::backend`](crate::ProxyBuilder::backend)). A backend named in several
    /// routes is one backend: one health, one count of connections, one cap.
    pub fn backend(mut self, addr: impl Into<String>) -> Self {
        self.backends.push(addr.into());
        self
    }

    /// How this route's handshakes are validated and rewritten. Default: the builder's
    /// ([`ProxyBuilder::rewrite`](crate::ProxyBuilder::rewrite)).
    pub fn rewrite(mut self, config: RewriteConfig) -> Self {
        self.rewrite = Some(config);
        self
    }

    /// The host pattern, as given.
    pub fn get_host(&self) -> &str {
        &self.host
    }

    /// The path prefix, as given.
    pub fn get_prefix(&self) -> &str {
        &self.prefix
    }

    /// The backends, as given.
    pub fn get_backends(&self) -> &[String] {
        &self.backends
    }

    /// The host pattern and prefix, checked.
    fn check(&self) -> Result<(HostPattern, String), BuildError> {
        let bad = |reason| BuildError::Route {
            route: self.to_string(),
            reason,
        };
        let host = HostPattern::parse(&self.host).map_err(bad)?;
        let prefix = &self.prefix;
        if !prefix.starts_with('/') {
            return Err(bad("the path prefix must start with /"));
        }
        if prefix
            .bytes()
            .any(|b| b == b'?' || b == b'#' || !b.is_ascii_graphic())
        {
            return Err(bad(
                "the path prefix is a path: no ?, #, spaces or control characters",
            ));
        }
        if self.backends.is_empty() {
            return Err(bad("no backend"));
        }
        Ok((host, prefix.clone()))
    }
}

impl fmt::Display for Route {
    /// The `--route` syntax: `HOST/PREFIX=BACKEND[,BACKEND...]`, `*` for any host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.is_empty() {
            "*"
        } else {
            &self.host
        };
        write!(f, "{host}{}={}", self.prefix, self.backends.join(","))
    }
}

impl FromStr for Route {
    type Err = BuildError;

    /// Parses `HOST/PREFIX=BACKEND[,BACKEND...]` (see [`Route`]).
    ///
    /// # Errors
    ///
    /// [`BuildError::Route`] saying what is wrong; the backend addresses themselves are
    /// checked by [`build`](crate::ProxyBuilder::build).
    fn from_str(s: &str) -> Result<Route, BuildError> {
        let bad = |reason| BuildError::Route {
            route: s.to_owned(),
            reason,
        };
        let (target, backends) = s
            .split_once('=')
            .ok_or_else(|| bad("no `=`: write HOST/PREFIX=BACKEND[,BACKEND...]"))?;
        let slash = target.find('/').ok_or_else(|| {
            bad("no path prefix: write HOST/PREFIX, e.g. chat.example/ws/ or */ for any host")
        })?;
        let (host, prefix) = target.split_at(slash);
        let backends: Vec<String> = backends.split(',').map(|b| b.trim().to_owned()).collect();
        if backends.iter().any(String::is_empty) {
            return Err(bad("an empty backend: write BACKEND[,BACKEND...]"));
        }
        let route = Route {
            host: host.trim().to_owned(),
            prefix: prefix.to_owned(),
            backends,
            rewrite: None,
        };
        route.check().map_err(|error| match error {
            BuildError::Route { reason, .. } => bad(reason),
            other => other,
        })?;
        Ok(route)
    }
}

/// Which hosts a route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// Lower case, without a trailing dot.
    Exact(String),
    /// `*.example` as `.example`, lower case.
    Suffix(String),
}

impl HostPattern {
    fn parse(pattern: &str) -> Result<HostPattern, &'static str> {
        let pattern = pattern.trim();
        if pattern.is_empty() || pattern == "*" {
            return Ok(HostPattern::Any);
        }
        let lower = pattern.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let ipv6 = name.starts_with('[') && name.ends_with(']');
        let valid = !name.is_empty()
            && (ipv6
                && !wildcard
                && name[1..name.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                || name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
        if !valid {
            return Err(
                "invalid host: a name (chat.example), *.name, or * for any host, without a port",
            );
        }
        Ok(if wildcard {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    fn matches(&self, host: Option<&str>) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (_, None) => false,
            (HostPattern::Exact(name), Some(host)) => host.eq_ignore_ascii_case(name),
            (HostPattern::Suffix(suffix), Some(host)) => {
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    /// Sites are searched in this order: exact names, then wildcards longest first, then any.
    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            HostPattern::Exact(_) => (0, std::cmp::Reverse(0)),
            HostPattern::Suffix(suffix) => (1, std::cmp::Reverse(suffix.len())),
            HostPattern::Any => (2, std::cmp::Reverse(0)),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// One route, built: its prefix, rewriter and pool.
pub(crate) struct Routed {
    prefix: String,
    /// `HOST/PREFIX`, for logs.
    label: String,
    pub(crate) rewriter: Rewriter,
    pub(crate) pool: Pool,
}

/// The routes of one host pattern, longest prefix first.
#[derive(Debug)]
struct Site {
    host: HostPattern,
    routes: Vec<usize>,
}

/// Every route of a proxy.
pub(crate) struct Routes {
    routes: Vec<Routed>,
    /// Exact names first, then wildcards longest first, then any host.
    sites: Vec<Site>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.routes.iter().map(|r| (&r.label, &r.pool)))
            .finish()
    }
}

impl Routes {
    /// The default route (`backends`, for any host and `/`, with `rewrite`) if it has
    /// backends, and `routes`; their backends are added to `set`.
    ///
    /// # Errors
    ///
    /// [`BuildError::Route`] for a route that cannot be used or repeats another's host and
    /// prefix; [`BuildError::Backend`] for a backend address that cannot be used.
    pub(crate) fn build(
        backends: &[String],
        rewrite: &RewriteConfig,
        routes: &[Route],
        set: &mut BackendsBuilder,
    ) -> Result<Routes, BuildError> {
        let mut built: Vec<(HostPattern, Routed)> = Vec::new();
        if !backends.is_empty() {
            built.push((
                HostPattern::Any,
                Routed {
                    prefix: "/".to_owned(),
                    label: "*/".to_owned(),
                    rewriter: Rewriter::new(rewrite.clone()),
                    pool: set.pool(backends)?,
                },
            ));
        }
        for route in routes {
            let (host, prefix) = route.check()?;
            if built.iter().any(|(h, r)| *h == host && r.prefix == prefix) {
                return Err(BuildError::Route {
                    route: route.to_string(),
                    reason: "another route (or the builder's own backends, the route for any \
                             host and /) has the same host and prefix",
                });
            }
            let rewrite = route.rewrite.clone().unwrap_or_else(|| rewrite.clone());
            built.push((
                host.clone(),
                Routed {
                    label: format!("{host}{prefix}"),
                    prefix,
                    rewriter: Rewriter::new(rewrite),
                    pool: set.pool(&route.backends)?,
                },
            ));
        }
        let mut sites: Vec<Site> = Vec::new();
        for (index, (host, _)) in built.iter().enumerate() {
            match sites.iter_mut().find(|site| site.host == *host) {
                Some(site) => site.routes.push(index),
                None => sites.push(Site {
                    host: host.clone(),
                    routes: vec![index],
                }),
            }
        }
        // Stable sorts: equal ranks keep the order given.
        sites.sort_by_key(|site| site.host.rank());
        for site in &mut sites {
            site.routes
                .sort_by_key(|&i| std::cmp::Reverse(built[i].1.prefix.len()));
        }
        Ok(Routes {
            routes: built.into_iter().map(|(_, routed)| routed).collect(),
            sites,
        })
    }

    pub(crate) fn get(&self, index: usize) -> &Routed {
        &self.routes[index]
    }

    /// The route `request` takes, by its host and path; `None` (a 404) when there is none.
    pub(crate) fn select<B>(&self, request: &Request<B>) -> Option<usize> {
        let site = match self.sites.as_slice() {
            // One site for any host: no need to look at the host.
            [site] if site.host == HostPattern::Any => site,
            sites => {
                let host = request_host(request);
                sites.iter().find(|site| site.host.matches(host))?
            }
        };
        // `*` (OPTIONS) and the authority form (CONNECT) have no path: they take the route of
        // `/`, whose rewriter refuses them (rule 6c).
        let path = request.uri().path();
        let path = if path.starts_with('/') { path } else { "/" };
        let routes = &self.routes;
        // The longest prefix that starts the path; a prefix `P/` taking the path `P` counts
        // as long as `P`, and loses a tie to a route whose prefix is `P` itself.
        let mut best: Option<(usize, bool, usize)> = None;
        for &i in &site.routes {
            let prefix = routes[i].prefix.as_str();
            let score = if path.starts_with(prefix) {
                (prefix.len(), true)
            } else if prefix.len() == path.len() + 1
                && prefix.ends_with('/')
                && prefix.starts_with(path)
            {
                (path.len(), false)
            } else {
                continue;
            };
            if best.map_or(true, |(len, literal, _)| score > (len, literal)) {
                best = Some((score.0, score.1, i));
            }
            if score.1 {
                // Longest first: no later route matches more of the path.
                break;
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// `HOST/PREFIX` of route `index`, for logs.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn label(&self, index: usize) -> &str {
        &self.routes[index].label
    }
}

/// The host a request is for, without its port: the target's authority (absolute form,
/// HTTP/2 `:authority`), else a single `Host` header; `None` when there is no usable one.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    let host = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => {
            let mut hosts = request.headers().get_all(HOST).iter();
            let host = hosts.next()?;
            if hosts.next().is_some() {
                return None;
            }
            host.to_str().ok()?
        }
    };
    // Without userinfo (refused later by the rewriter anyway) and port.
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    let host = if host.starts_with('[') {
        &host[..=host.find(']')?]
    } else {
        host.rsplit_once(':').map_or(host, |(host, _)| host)
    };
    Some(host.strip_suffix('.').unwrap_or(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(defaults: &[&str], routes: &[&str]) -> Routes {
        let defaults: Vec<String> = defaults.iter().map(|s| s.to_string()).collect();
        let routes: Vec<Route> = routes.iter().map(|r| r.parse().unwrap()).collect();
        let mut set = BackendsBuilder::new();
        Routes::build(&defaults, &RewriteConfig::new(), &routes, &mut set).unwrap()
    }

    /// The label of the route a request for `host` and `target` takes.
    fn pick(routes: &Routes, host: Option<&str>, target: &str) -> Option<String> {
        let mut request = Request::get(target);
        if let Some(host) = host {
            request = request.header(HOST, host);
        }
        let request = request.body(()).unwrap();
        routes.select(&request).map(|i| routes.label(i).to_owned())
    }

    #[test]
    fn host_first_then_the_longest_prefix() {
        let table = routes(
            &["127.0.0.1:1"],
            &[
                "chat.example/=127.0.0.1:2",
                "chat.example/ws/=127.0.0.1:3",
                "chat.example/ws/admin/=127.0.0.1:4",
                "*.example/live/=127.0.0.1:5",
                "*.eu.example/live/=127.0.0.1:6",
                "/ws/=127.0.0.1:7",
                "api.example/v1/=127.0.0.1:8",
            ],
        );
        for (host, target, expected) in [
            // Exact host, longest prefix.
            (
                Some("chat.example"),
                "/ws/admin/x",
                Some("chat.example/ws/admin/"),
            ),
            (Some("chat.example"), "/ws/room", Some("chat.example/ws/")),
            (Some("chat.example"), "/other", Some("chat.example/")),
            // Port, case and a trailing dot do not matter.
            (
                Some("CHAT.example.:8080"),
                "/ws/x",
                Some("chat.example/ws/"),
            ),
            // `/ws` under `/ws/` (as strip_prefix takes it).
            (Some("chat.example"), "/ws", Some("chat.example/ws/")),
            // Wildcards: the longest suffix first; never the bare domain.
            (Some("a.eu.example"), "/live/1", Some("*.eu.example/live/")),
            (Some("a.example"), "/live/1", Some("*.example/live/")),
            (Some("example"), "/live/1", Some("*/")),
            // A host with routes but none for the path: 404, no fall back to any host.
            (Some("a.example"), "/ws/x", None),
            (Some("api.example"), "/v2/", None),
            // Any other host: the routes for any host, longest prefix first.
            (Some("other.test"), "/ws/x", Some("*/ws/")),
            (Some("other.test"), "/x", Some("*/")),
            (None, "/x", Some("*/")),
            // Prefixes are case-sensitive and not percent-decoded.
            (Some("other.test"), "/WS/x", Some("*/")),
            (Some("chat.example"), "/w%73/x", Some("chat.example/")),
        ] {
            assert_eq!(
                pick(&table, host, target).as_deref(),
                expected,
                "{host:?} {target}"
            );
        }
    }

    #[test]
    fn the_absolute_form_and_http2_authority_choose_the_host() {
        let table = routes(&[], &["chat.example/=127.0.0.1:2", "[::1]/=127.0.0.1:3"]);
        let request = Request::get("http://chat.example:80/x")
            .header(HOST, "other.test")
            .body(())
            .unwrap();
        assert_eq!(
            table.select(&request).map(|i| table.label(i)),
            Some("chat.example/")
        );
        assert_eq!(
            pick(&table, Some("[::1]:9000"), "/").as_deref(),
            Some("[::1]/")
        );
        // No route for any host: an unknown host, or none, is a 404.
        assert_eq!(pick(&table, Some("other.test"), "/"), None);
        assert_eq!(pick(&table, None, "/"), None);
        // Two Host headers choose nothing (the rewriter refuses them anyway).
        let request = Request::get("/")
            .header(HOST, "chat.example")
            .header(HOST, "chat.example")
            .body(())
            .unwrap();
        assert_eq!(table.select(&request), None);
    }

    #[test]
    fn a_longer_exact_prefix_beats_the_trailing_slash_rule() {
        let table = routes(&[], &["*/ws=127.0.0.1:1", "*/ws/=127.0.0.1:2"]);
        assert_eq!(pick(&table, None, "/ws").as_deref(), Some("*/ws"));
        assert_eq!(pick(&table, None, "/ws/x").as_deref(), Some("*/ws/"));
        assert_eq!(pick(&table, None, "/wsx").as_deref(), Some("*/ws"));
        assert_eq!(pick(&table, None, "/x"), None);
    }

    #[test]
    fn route_syntax() {
        for (ok, host, prefix, backends) in [
            ("chat.example/ws/=127.0.0.1:9000", "chat.example", "/ws/", 1),
            ("*/=a:1,b:2", "*", "/", 2),
            ("/ws/=a:1", "", "/ws/", 1),
            (
                "*.example/live=wss://a:443, unix:/run/b.sock",
                "*.example",
                "/live",
                2,
            ),
            ("[::1]/=a:1", "[::1]", "/", 1),
        ] {
            let route: Route = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(route.get_host(), host, "{ok}");
            assert_eq!(route.get_prefix(), prefix, "{ok}");
            assert_eq!(route.get_backends().len(), backends, "{ok}");
        }
        for (bad, why) in [
            ("chat.example", "no `=`"),
            ("chat.example=a:1", "no path prefix"),
            ("chat.example/ws/=", "empty backend"),
            ("chat.example/ws/=a:1,", "empty backend"),
            ("chat.example:8080/ws/=a:1", "invalid host"),
            ("ch at/=a:1", "invalid host"),
            ("*.*/=a:1", "invalid host"),
            ("a.*/=a:1", "invalid host"),
            ("*./=a:1", "invalid host"),
            ("[zz]/=a:1", "invalid host"),
            ("x/ws?a/=a:1", "prefix is a path"),
            ("x/w s/=a:1", "prefix is a path"),
        ] {
            match bad.parse::<Route>() {
                Err(error) => {
                    let text = error.to_string();
                    assert!(text.contains(why), "{bad}: {text}");
                    assert!(text.contains(bad), "{bad}: {text}");
                }
                Ok(route) => panic!("{bad} was accepted: {route:?}"),
            }
        }
    }

    #[test]
    fn routes_are_checked_when_built() {
        let build = |routes: &[Route]| {
            let mut set = BackendsBuilder::new();
            Routes::build(&["a:1".to_owned()], &RewriteConfig::new(), routes, &mut set)
        };
        for (route, why) in [
            (
                Route::new().prefix("ws").backend("b:1"),
                "must start with /",
            ),
            (Route::new().host("x").prefix("/"), "no backend"),
            (Route::new().backend("b:1"), "same host and prefix"),
            (Route::new().host("x/y").backend("b:1"), "invalid host"),
        ] {
            match build(std::slice::from_ref(&route)) {
                Err(error) => assert!(error.to_string().contains(why), "{route}: {error}"),
                Ok(_) => panic!("{route} was accepted"),
            }
        }
        let twice = Route::new().host("X.example").prefix("/a").backend("b:1");
        assert!(build(&[twice.clone(), twice.host("x.example.")]).is_err());
        assert!(matches!(
            build(&[Route::new().host("x").backend("b")]),
            Err(BuildError::Backend { .. })
        ));
    }
}
