//! Validation of a `route_config`: virtual hosts, route matches and
//! actions, header changes, retry policies.

use std::collections::HashMap;
use std::time::Duration;

use super::ConfigError;
use super::raw;
use super::snapshot::*;
use super::validate::{cluster_ref, err};

const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's retry back-off: 25 ms base, at most ten times that.
const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(25);
/// Bounds on compiled regexes, so a config cannot make a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Route-level settings inherited from the connection manager.
pub(super) struct HcmDefaults<'a> {
    /// Upgrade types enabled on the connection manager, lower-cased.
    pub upgrades: &'a [String],
}

pub(super) fn validate_routes(
    rc: &raw::RouteConfiguration,
    path: &str,
    clusters: &HashMap<&str, ClusterId>,
    hcm: &HcmDefaults<'_>,
) -> Result<RouteTable, ConfigError> {
    let global_req = header_mutations(&rc.request_headers_to_add, &rc.request_headers_to_remove, path, "request")?;
    let global_resp = header_mutations(&rc.response_headers_to_add, &rc.response_headers_to_remove, path, "response")?;
    let mut virtual_hosts = Vec::new();
    let mut seen_domains: HashMap<String, usize> = HashMap::new();
    for (vi, vh) in rc.virtual_hosts.iter().enumerate() {
        let vpath = format!("{path}.virtual_hosts[{vi}]");
        let domains = validate_domains(vh, vi, &vpath, &mut seen_domains)?;
        let vh_req = header_mutations(&vh.request_headers_to_add, &vh.request_headers_to_remove, &vpath, "request")?;
        let vh_resp =
            header_mutations(&vh.response_headers_to_add, &vh.response_headers_to_remove, &vpath, "response")?;
        let vh_retry =
            vh.retry_policy.as_ref().map(|p| retry_policy(p, &format!("{vpath}.retry_policy"))).transpose()?;
        let mut routes = Vec::new();
        for (ri, r) in vh.routes.iter().enumerate() {
            let rpath = format!("{vpath}.routes[{ri}]");
            let r_req = header_mutations(&r.request_headers_to_add, &r.request_headers_to_remove, &rpath, "request")?;
            let r_resp =
                header_mutations(&r.response_headers_to_add, &r.response_headers_to_remove, &rpath, "response")?;
            let request_headers = combine(&[&r_req, &vh_req, &global_req]);
            let response_headers = combine(&[&r_resp, &vh_resp, &global_resp]);
            let m = &r.route_match;
            let mpath = format!("{rpath}.match");
            let case_sensitive = m.case_sensitive.unwrap_or(true);
            let path_match = path_match(m, &mpath)?;
            let headers = m
                .headers
                .iter()
                .enumerate()
                .map(|(i, h)| header_match(h, &format!("{mpath}.headers[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let query = m
                .query_parameters
                .iter()
                .enumerate()
                .map(|(i, q)| query_match(q, &format!("{mpath}.query_parameters[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let given = [r.route.is_some(), r.direct_response.is_some(), r.redirect.is_some()];
            match given.iter().filter(|g| **g).count() {
                0 => return Err(err(rpath, "give one of route, direct_response or redirect")),
                1 => {}
                _ => return Err(err(rpath, "give only one of route, direct_response or redirect")),
            }
            let action = if let Some(rd) = &r.redirect {
                RouteActionConfig::Redirect(validate_redirect(rd, &format!("{rpath}.redirect"))?)
            } else if let Some(a) = &r.route {
                let ctx = ForwardContext {
                    clusters,
                    hcm,
                    vh_retry: vh_retry.as_ref(),
                    route_request: &request_headers,
                    route_response: &response_headers,
                };
                RouteActionConfig::Forward(Box::new(forward(a, &format!("{rpath}.route"), &ctx)?))
            } else if let Some(d) = &r.direct_response {
                direct_response(d, &format!("{rpath}.direct_response"))?
            } else {
                return Err(err(rpath, "give one of route, direct_response or redirect"));
            };
            routes.push(RouteEntry {
                name: r.name.clone(),
                path: path_match,
                case_sensitive,
                headers,
                query,
                action,
                request_headers,
                response_headers,
            });
        }
        virtual_hosts.push(VirtualHostConfig { name: vh.name.clone(), domains, routes });
    }
    Ok(RouteTable { virtual_hosts })
}

fn validate_domains(
    vh: &raw::VirtualHost,
    vi: usize,
    vpath: &str,
    seen: &mut HashMap<String, usize>,
) -> Result<Vec<DomainMatch>, ConfigError> {
    if vh.domains.is_empty() {
        return Err(err(format!("{vpath}.domains"), "must list at least one domain"));
    }
    let mut domains = Vec::new();
    for (di, d) in vh.domains.iter().enumerate() {
        let dpath = format!("{vpath}.domains[{di}]");
        let lower = d.to_ascii_lowercase();
        if let Some(first) = seen.insert(lower.clone(), vi) {
            return Err(err(dpath, format!("domain `{d}` is also in virtual_hosts[{first}]")));
        }
        domains.push(match lower.as_str() {
            "" => return Err(err(dpath, "must not be empty")),
            "*" => DomainMatch::Any,
            _ if lower.starts_with('*') && lower.len() > 1 && !lower[1..].contains('*') => {
                DomainMatch::Suffix(lower[1..].to_string())
            }
            _ if lower.ends_with('*') && !lower[..lower.len() - 1].contains('*') => {
                DomainMatch::Prefix(lower[..lower.len() - 1].to_string())
            }
            _ if lower.contains('*') => {
                return Err(err(dpath, "a wildcard may only be the first or last character"));
            }
            _ => DomainMatch::Exact(lower),
        });
    }
    Ok(domains)
}

/// A whole-input regex (Envoy's `safe_regex` must match all of it).
fn anchored_regex(re: &str, path: &str, ignore_case: bool) -> Result<regex::Regex, ConfigError> {
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .case_insensitive(ignore_case)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| err(path, format!("invalid regex: {e}")))
}

fn path_match(m: &raw::RouteMatch, mpath: &str) -> Result<PathMatch, ConfigError> {
    let given = [m.prefix.is_some(), m.path.is_some(), m.safe_regex.is_some(), m.path_separated_prefix.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(err(mpath, "give only one of prefix, path, safe_regex or path_separated_prefix"));
    }
    if let Some(p) = &m.prefix {
        return Ok(PathMatch::Prefix(p.clone()));
    }
    if let Some(p) = &m.path {
        return Ok(PathMatch::Exact(p.clone()));
    }
    if let Some(re) = &m.safe_regex {
        // As in Envoy, case_sensitive has no effect on safe_regex.
        return Ok(PathMatch::Regex(anchored_regex(&re.regex, &format!("{mpath}.safe_regex.regex"), false)?));
    }
    if let Some(p) = &m.path_separated_prefix {
        let ppath = format!("{mpath}.path_separated_prefix");
        if !p.starts_with('/') || p.ends_with('/') {
            return Err(err(ppath, "must start with / and not end with one"));
        }
        if p.contains(['?', '#']) {
            return Err(err(ppath, "must not contain ? or #"));
        }
        return Ok(PathMatch::SeparatedPrefix(p.clone()));
    }
    Err(err(mpath, "give one of prefix, path, safe_regex or path_separated_prefix"))
}

pub(super) fn string_match(m: &raw::StringMatcher, path: &str) -> Result<StringMatch, ConfigError> {
    let ignore_case = m.ignore_case.unwrap_or(false);
    let given =
        [m.exact.is_some(), m.prefix.is_some(), m.suffix.is_some(), m.contains.is_some(), m.safe_regex.is_some()];
    let kind = match given.iter().filter(|g| **g).count() {
        0 => return Err(err(path, "give one of exact, prefix, suffix, contains or safe_regex")),
        1 => {
            let fold = |s: &String| if ignore_case { s.to_ascii_lowercase() } else { s.clone() };
            if let Some(s) = &m.exact {
                StringMatchKind::Exact(fold(s))
            } else if let Some(s) = &m.prefix {
                StringMatchKind::Prefix(fold(s))
            } else if let Some(s) = &m.suffix {
                StringMatchKind::Suffix(fold(s))
            } else if let Some(s) = &m.contains {
                StringMatchKind::Contains(fold(s))
            } else if let Some(re) = &m.safe_regex {
                StringMatchKind::Regex(anchored_regex(&re.regex, &format!("{path}.safe_regex.regex"), ignore_case)?)
            } else {
                return Err(err(path, "give one of exact, prefix, suffix, contains or safe_regex"));
            }
        }
        _ => return Err(err(path, "give only one of exact, prefix, suffix, contains or safe_regex")),
    };
    Ok(StringMatch { kind, ignore_case })
}

fn header_match(h: &raw::HeaderMatcher, path: &str) -> Result<HeaderMatch, ConfigError> {
    let name = h.name.to_ascii_lowercase();
    let pseudo = [":method", ":path", ":authority", ":scheme"];
    let valid = !name.is_empty()
        && (pseudo.contains(&name.as_str())
            || name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)));
    if !valid {
        return Err(err(format!("{path}.name"), format!("`{}` is not a header name ringway can match", h.name)));
    }
    let plain = |kind: StringMatchKind| HeaderRule::Value(StringMatch { kind, ignore_case: false });
    let mut rules = Vec::new();
    if let Some(s) = &h.exact_match {
        rules.push(plain(StringMatchKind::Exact(s.clone())));
    }
    if let Some(s) = &h.prefix_match {
        rules.push(plain(StringMatchKind::Prefix(s.clone())));
    }
    if let Some(s) = &h.suffix_match {
        rules.push(plain(StringMatchKind::Suffix(s.clone())));
    }
    if let Some(s) = &h.contains_match {
        rules.push(plain(StringMatchKind::Contains(s.clone())));
    }
    if let Some(re) = &h.safe_regex_match {
        let compiled = anchored_regex(&re.regex, &format!("{path}.safe_regex_match.regex"), false)?;
        rules.push(plain(StringMatchKind::Regex(compiled)));
    }
    if let Some(r) = &h.range_match {
        if r.start >= r.end {
            return Err(err(format!("{path}.range_match"), "start must be less than end"));
        }
        rules.push(HeaderRule::Range(r.start, r.end));
    }
    if let Some(p) = h.present_match {
        rules.push(HeaderRule::Present(p));
    }
    if let Some(sm) = &h.string_match {
        rules.push(HeaderRule::Value(string_match(sm, &format!("{path}.string_match"))?));
    }
    if rules.len() > 1 {
        return Err(err(
            path,
            "give only one of exact_match, prefix_match, suffix_match, contains_match, safe_regex_match, range_match, present_match or string_match",
        ));
    }
    Ok(HeaderMatch {
        name,
        // No value matcher: the header must be present.
        rule: rules.pop().unwrap_or(HeaderRule::Present(true)),
        invert: h.invert_match.unwrap_or(false),
        missing_as_empty: h.treat_missing_header_as_empty.unwrap_or(false),
    })
}

fn query_match(q: &raw::QueryParameterMatcher, path: &str) -> Result<QueryMatch, ConfigError> {
    if q.name.is_empty() {
        return Err(err(format!("{path}.name"), "must not be empty"));
    }
    let value = match (&q.string_match, q.present_match) {
        (Some(_), Some(_)) => return Err(err(path, "give string_match or present_match, not both")),
        (Some(sm), None) => Some(string_match(sm, &format!("{path}.string_match"))?),
        (None, Some(true) | None) => None,
        (None, Some(false)) => {
            return Err(err(format!("{path}.present_match"), "false is not meaningful; omit the matcher"));
        }
    };
    Ok(QueryMatch { name: q.name.clone(), value })
}

fn direct_response(d: &raw::DirectResponse, path: &str) -> Result<RouteActionConfig, ConfigError> {
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .ok_or_else(|| err(format!("{path}.status"), "must be in 200..=599"))?;
    if d.body.as_ref().is_some_and(|b| b.filename.is_some()) {
        return Err(err(format!("{path}.body.filename"), "not supported for direct responses; use inline_string"));
    }
    let body = d.body.as_ref().and_then(|b| b.inline_string.clone()).unwrap_or_default();
    if body.len() > 4096 {
        return Err(err(format!("{path}.body"), "is larger than 4096 bytes"));
    }
    Ok(RouteActionConfig::Direct { status, body })
}

struct ForwardContext<'a> {
    clusters: &'a HashMap<&'a str, ClusterId>,
    hcm: &'a HcmDefaults<'a>,
    vh_retry: Option<&'a RetryConfig>,
    route_request: &'a HeaderMutations,
    route_response: &'a HeaderMutations,
}

fn forward(a: &raw::RouteAction, apath: &str, ctx: &ForwardContext<'_>) -> Result<ForwardConfig, ConfigError> {
    let target = match (&a.cluster, &a.weighted_clusters) {
        (Some(_), Some(_)) => {
            return Err(err(format!("{apath}.weighted_clusters"), "give cluster or weighted_clusters, not both"));
        }
        (Some(name), None) => ForwardTarget::Cluster(cluster_ref(ctx.clusters, name, &format!("{apath}.cluster"))?),
        (None, Some(wc)) => weighted_target(wc, &format!("{apath}.weighted_clusters"), ctx)?,
        (None, None) => return Err(err(format!("{apath}.cluster"), "missing: give cluster or weighted_clusters")),
    };
    let hosts_given = [a.host_rewrite.is_some(), a.host_rewrite_literal.is_some(), a.auto_host_rewrite == Some(true)];
    if hosts_given.iter().filter(|g| **g).count() > 1 {
        return Err(err(
            format!("{apath}.host_rewrite_literal"),
            "give only one of host_rewrite_literal, host_rewrite or auto_host_rewrite",
        ));
    }
    if a.prefix_rewrite.is_some() && a.regex_rewrite.is_some() {
        return Err(err(format!("{apath}.regex_rewrite"), "give prefix_rewrite or regex_rewrite, not both"));
    }
    let regex_rewrite = match &a.regex_rewrite {
        None => None,
        Some(rr) => {
            let rpath = format!("{apath}.regex_rewrite");
            let re = regex::RegexBuilder::new(&rr.pattern.regex)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| err(format!("{rpath}.pattern.regex"), format!("invalid regex: {e}")))?;
            let substitution = substitution(&rr.substitution, re.captures_len())
                .map_err(|m| err(format!("{rpath}.substitution"), m))?;
            Some((re, substitution))
        }
    };
    let timeout = match a.timeout {
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
    };
    // Envoy: a route idle_timeout of 0s disables the stream idle timeout.
    let idle_timeout = a.idle_timeout.map(|d| if d.0.is_zero() { Duration::from_secs(86_400) } else { d.0 });
    let retry = match &a.retry_policy {
        Some(p) => Some(retry_policy(p, &format!("{apath}.retry_policy"))?),
        None => ctx.vh_retry.cloned(),
    };
    let mut upgrades: Vec<String> = ctx.hcm.upgrades.to_vec();
    for (i, u) in a.upgrade_configs.iter().enumerate() {
        let ty = upgrade_type(u, &format!("{apath}.upgrade_configs[{i}]"))?;
        let enabled = u.enabled.unwrap_or(true);
        upgrades.retain(|t| *t != ty);
        if enabled {
            upgrades.push(ty);
        }
    }
    Ok(ForwardConfig {
        target,
        prefix_rewrite: a.prefix_rewrite.clone(),
        regex_rewrite,
        host_rewrite: a.host_rewrite_literal.clone().or_else(|| a.host_rewrite.clone()),
        auto_host_rewrite: a.auto_host_rewrite.unwrap_or(false),
        timeout,
        idle_timeout,
        retry,
        upgrades,
    })
}

/// An `upgrade_type` ringway can tunnel, lower-cased.
pub(super) fn upgrade_type(u: &raw::UpgradeConfig, path: &str) -> Result<String, ConfigError> {
    let ty = u.upgrade_type.to_ascii_lowercase();
    if ty == "connect" {
        return Err(err(format!("{path}.upgrade_type"), "CONNECT is not supported yet"));
    }
    if ty.is_empty() || !ty.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b)) {
        return Err(err(
            format!("{path}.upgrade_type"),
            format!("`{}` is not an upgrade protocol token", u.upgrade_type),
        ));
    }
    Ok(ty)
}

fn weighted_target(
    wc: &raw::RouteWeightedClusters,
    path: &str,
    ctx: &ForwardContext<'_>,
) -> Result<ForwardTarget, ConfigError> {
    if wc.clusters.is_empty() {
        return Err(err(format!("{path}.clusters"), "must not be empty"));
    }
    let mut clusters = Vec::new();
    let mut total: u64 = 0;
    for (i, c) in wc.clusters.iter().enumerate() {
        let cpath = format!("{path}.clusters[{i}]");
        let cluster = cluster_ref(ctx.clusters, &c.name, &format!("{cpath}.name"))?;
        let req = header_mutations(&c.request_headers_to_add, &c.request_headers_to_remove, &cpath, "request")?;
        let resp = header_mutations(&c.response_headers_to_add, &c.response_headers_to_remove, &cpath, "response")?;
        total += u64::from(c.weight);
        clusters.push(WeightedTarget {
            cluster,
            weight: c.weight,
            request_headers: combine(&[&req, ctx.route_request]),
            response_headers: combine(&[&resp, ctx.route_response]),
        });
    }
    if total == 0 {
        return Err(err(format!("{path}.clusters"), "the weights must not all be 0"));
    }
    if let Some(t) = wc.total_weight
        && u64::from(t) != total
    {
        return Err(err(format!("{path}.total_weight"), format!("is {t} but the weights sum to {total}")));
    }
    Ok(ForwardTarget::Weighted { clusters, total_weight: total })
}

/// Translates Envoy's (RE2) substitution, where `\1` names a group, into the
/// regex crate's `${1}`; a literal `$` is escaped.
fn substitution(s: &str, groups: usize) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(d) if d.is_ascii_digit() => {
                    let n = d.to_digit(10).unwrap_or(0) as usize;
                    if n >= groups {
                        return Err(format!("\\{n} names a group the pattern does not have"));
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('\\') => out.push('\\'),
                _ => return Err("a backslash must be followed by a group number or another backslash".into()),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn retry_policy(p: &raw::RetryPolicy, path: &str) -> Result<RetryConfig, ConfigError> {
    let mut on = RetryOn::default();
    for cond in p.retry_on.as_deref().unwrap_or("").split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match cond {
            "5xx" => on.server_error = true,
            "gateway-error" => on.gateway_error = true,
            "connect-failure" => on.connect_failure = true,
            "reset" => on.reset = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "retriable-status-codes" => on.retriable_status_codes = true,
            // HTTP/2 only; nothing to do on HTTP/1.1 upstreams.
            "refused-stream" => {}
            other => {
                return Err(err(
                    format!("{path}.retry_on"),
                    format!(
                        "`{other}` is not supported; expected 5xx, gateway-error, connect-failure, reset, retriable-4xx, retriable-status-codes or refused-stream"
                    ),
                ));
            }
        }
    }
    let mut status_codes = Vec::new();
    for (i, &c) in p.retriable_status_codes.iter().enumerate() {
        let code = u16::try_from(c)
            .ok()
            .filter(|c| (100..600).contains(c))
            .ok_or_else(|| err(format!("{path}.retriable_status_codes[{i}]"), "must be in 100..=599"))?;
        status_codes.push(code);
    }
    let per_try_timeout = p.per_try_timeout.map(|d| d.0).filter(|d| !d.is_zero());
    let (base_interval, max_interval) = match &p.retry_back_off {
        None => (DEFAULT_RETRY_BASE, DEFAULT_RETRY_BASE * 10),
        Some(b) => {
            if b.base_interval.0 < Duration::from_millis(1) {
                return Err(err(format!("{path}.retry_back_off.base_interval"), "must be at least 1ms"));
            }
            let max = b.max_interval.map_or(b.base_interval.0 * 10, |m| m.0);
            if max < b.base_interval.0 {
                return Err(err(format!("{path}.retry_back_off.max_interval"), "must not be less than base_interval"));
            }
            (b.base_interval.0, max)
        }
    };
    Ok(RetryConfig {
        on,
        num_retries: p.num_retries.unwrap_or(1),
        per_try_timeout,
        status_codes,
        base_interval,
        max_interval,
    })
}

/// One level's `*_headers_to_add` / `*_headers_to_remove`.
/// Why a header that frames the message (which ringway writes itself, as
/// each hop needs) cannot be added or removed by configuration: a body sent
/// with a length its receiver does not see would be read as the next
/// message.
fn framing_header(lower: &str) -> Option<&'static str> {
    matches!(lower, "content-length" | "transfer-encoding")
        .then_some("frames the message: ringway writes it for each hop, so it cannot be added or removed")
}

pub(super) fn header_mutations(
    add: &[raw::HeaderValueOption],
    remove: &[String],
    path: &str,
    side: &str,
) -> Result<HeaderMutations, ConfigError> {
    let valid_name =
        |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let mut out = HeaderMutations::default();
    for (i, name) in remove.iter().enumerate() {
        let p = format!("{path}.{side}_headers_to_remove[{i}]");
        let lower = name.to_ascii_lowercase();
        if !valid_name(&lower) {
            return Err(err(p, format!("`{name}` is not a valid header name")));
        }
        if side == "request" && lower == "host" {
            return Err(err(p, "host cannot be removed"));
        }
        if let Some(why) = framing_header(&lower) {
            return Err(err(p, why));
        }
        out.remove.push(lower);
    }
    for (i, h) in add.iter().enumerate() {
        let p = format!("{path}.{side}_headers_to_add[{i}]");
        let lower = h.header.key.to_ascii_lowercase();
        if !valid_name(&lower) {
            return Err(err(format!("{p}.header.key"), format!("`{}` is not a valid header name", h.header.key)));
        }
        if let Some(why) = framing_header(&lower) {
            return Err(err(format!("{p}.header.key"), why));
        }
        if h.header.value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(err(format!("{p}.header.value"), "must not contain CR, LF or NUL"));
        }
        // `%VARIABLE%` values are compiled once here, rendered per request.
        let format =
            crate::access_log::Format::parse(&h.header.value).map_err(|e| err(format!("{p}.header.value"), e))?;
        let (value, format) = match format.as_literal() {
            Some(literal) => (literal, None),
            None => (h.header.value.clone(), Some(std::sync::Arc::new(format))),
        };
        if h.append.is_some() && h.append_action.is_some() {
            return Err(err(format!("{p}.append"), "give append or append_action, not both"));
        }
        let action = match (h.append_action, h.append) {
            (Some(raw::HeaderAppendAction::AppendIfExistsOrAdd), _) | (None, Some(true) | None) => {
                AppendAction::AppendIfExistsOrAdd
            }
            (Some(raw::HeaderAppendAction::AddIfAbsent), _) => AppendAction::AddIfAbsent,
            (Some(raw::HeaderAppendAction::OverwriteIfExistsOrAdd), _) | (None, Some(false)) => {
                AppendAction::OverwriteIfExistsOrAdd
            }
            (Some(raw::HeaderAppendAction::OverwriteIfExists), _) => AppendAction::OverwriteIfExists,
        };
        out.add.push(HeaderAdd { name: lower, value, format, action });
    }
    Ok(out)
}

/// Levels in application order (most specific first), flattened.
fn combine(levels: &[&HeaderMutations]) -> HeaderMutations {
    let mut out = HeaderMutations::default();
    for l in levels {
        out.remove.extend(l.remove.iter().cloned());
        out.add.extend(l.add.iter().cloned());
    }
    out
}

fn validate_redirect(rd: &raw::RedirectAction, path: &str) -> Result<RedirectConfig, ConfigError> {
    let scheme = match (rd.https_redirect, &rd.scheme_redirect) {
        (Some(true), Some(_)) => {
            return Err(err(format!("{path}.scheme_redirect"), "give https_redirect or scheme_redirect, not both"));
        }
        (Some(true), None) => Some("https".to_string()),
        (_, Some(s)) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
            Some(s.to_ascii_lowercase())
        }
        (_, Some(s)) => return Err(err(format!("{path}.scheme_redirect"), format!("`{s}`: expected http or https"))),
        _ => None,
    };
    if rd.path_redirect.is_some() && rd.prefix_rewrite.is_some() {
        return Err(err(format!("{path}.prefix_rewrite"), "give path_redirect or prefix_rewrite, not both"));
    }
    if let Some(p) = &rd.path_redirect
        && !p.starts_with('/')
    {
        return Err(err(format!("{path}.path_redirect"), "must start with /"));
    }
    let port = match rd.port_redirect {
        None => None,
        Some(p) => Some(
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| err(format!("{path}.port_redirect"), "must be in 1..=65535"))?,
        ),
    };
    let status = match rd.response_code.unwrap_or(raw::RedirectResponseCode::MovedPermanently) {
        raw::RedirectResponseCode::MovedPermanently => 301,
        raw::RedirectResponseCode::Found => 302,
        raw::RedirectResponseCode::SeeOther => 303,
        raw::RedirectResponseCode::TemporaryRedirect => 307,
        raw::RedirectResponseCode::PermanentRedirect => 308,
    };
    Ok(RedirectConfig {
        scheme,
        host: rd.host_redirect.clone(),
        port,
        path: rd.path_redirect.clone(),
        prefix_rewrite: rd.prefix_rewrite.clone(),
        status,
        strip_query: rd.strip_query.unwrap_or(false),
    })
}
