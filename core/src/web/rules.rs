//! The per-request rule engine both HTTP adapters drive: which rules apply to a request, each
//! rule's key (every distinct scope resolved once, so a JWT is verified once per request), one
//! concurrent check per rule in its own bucket, and the merged headers and 429 body. When a token
//! would cost a signature check, the rules that need no identity decide first: a client already
//! over its IP limit is answered 429 without spending that CPU. A shadow rule decides and counts
//! like the others but is never enforced: it only reports what it would have done.

use crate::decision::{Decision, Source};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::MAX_IDENTITY;
use crate::limiter::{CheckOptions, Limiter};
use crate::web::{
    bearer_token, merged_headers, merged_limited_body, AppVerdict, HeaderStyle, KeyPart, KeyResolver, KeyScope,
    RequestInfo, RouteRule,
};

/// One rule: where it applies, what it limits, and how its key is made.
pub struct Rule {
    pub name: String,
    /// None: every request.
    pub route: Option<RouteRule>,
    pub limiter: Limiter,
    /// None: the application supplies the key (a key function in the adapter).
    pub scope: Option<KeyScope>,
    pub cost: u64,
    /// Decides and counts as usual, but never denies and sends no headers: its would-be denials
    /// are reported (`RuleOutcome::shadow_denied`, metrics `result="shadow_denied"`, the span).
    /// How a new limit is tried on live traffic before it is enforced.
    pub shadow: bool,
}

impl Rule {
    /// A rule whose cost its limiter can take: a cost above the smallest limit (or a token
    /// bucket's burst) could never pass, so it is refused here, not on the first request.
    pub fn new(
        name: impl Into<String>,
        route: Option<RouteRule>,
        limiter: Limiter,
        scope: Option<KeyScope>,
        cost: u64,
    ) -> Result<Self> {
        let name = name.into();
        Rule::check_cost(&name, &limiter, cost)?;
        Ok(Rule { name, route, limiter, scope, cost, shadow: false })
    }

    /// Sets [`Rule::shadow`].
    #[must_use]
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// The check behind [`Rule::new`], for bindings that hold a rule's parts before building it.
    pub fn check_cost(name: &str, limiter: &Limiter, cost: u64) -> Result<()> {
        if cost == 0 {
            return Err(Error::config("cost", cost, format!("rule {name:?}: must be at least 1")));
        }
        if cost > limiter.max_cost() {
            let limits: Vec<String> = limiter.limits().iter().map(|l| l.to_string()).collect();
            return Err(Error::config(
                "cost",
                cost,
                format!(
                    "rule {name:?}: exceeds its limit of {} per request ({}); such a request could never pass",
                    limiter.max_cost(),
                    limits.join(", ")
                ),
            ));
        }
        Ok(())
    }

    pub fn applies(&self, method: &str, path: &str) -> bool {
        self.route.as_ref().is_none_or(|r| r.matches(method, path))
    }
}

/// The rules of one middleware, decorator or dependency.
pub struct RuleSet {
    resolver: KeyResolver,
    rules: Vec<Rule>,
    style: HeaderStyle,
}

/// What an adapter reads off one request; every field but `peer` is client-controlled.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The real path (matched against rule patterns, so respelling cannot dodge a rule).
    pub path: &'a str,
    /// The route template, for `endpoint` keys; None: the path without query or fragment.
    pub route: Option<&'a str>,
    pub peer: &'a str,
    pub forwarded_for: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub api_key: Option<&'a str>,
    /// What the app's `verify` callback said about `api_key` (None: no callback ran).
    pub api_key_verdict: Option<AppVerdict<'a>>,
    /// The app's W3C trace context: each rule's `floodwall.check` span becomes its child.
    pub traceparent: Option<&'a str>,
}

/// One rule's answer.
#[derive(Debug, Clone)]
pub struct RuleDecision {
    pub rule: String,
    pub key: String,
    /// The limiter's answer; for a shadow rule, what would have happened.
    pub decision: Decision,
    /// The rule is a shadow rule: its decision was not enforced.
    pub shadow: bool,
}

/// The outcome for one request.
#[derive(Debug)]
pub struct RuleOutcome {
    /// Some rule applied to this request.
    pub matched: bool,
    /// The key of the first matching rule.
    pub key: Option<String>,
    /// X-Forwarded-For came from a peer that is not a trusted proxy, and was ignored.
    pub forwarded_for_ignored: bool,
    /// A `user` key part came from a verified JWT.
    pub user_verified: bool,
    /// An API key was sent and did not verify (a failed lookup); its `api_key` parts used the IP.
    pub api_key_rejected: bool,
    /// The rules needing no identity denied first, so the JWT was never verified and the other
    /// matching rules were neither resolved nor counted.
    pub identity_skipped: bool,
    pub decided: Vec<RuleDecision>,
    /// Shadow rules that would have denied this request, in rule order. They did not deny it,
    /// and their limits are not in the headers.
    pub shadow_denied: Vec<String>,
    /// Rules whose store failed with fallback `error`: they let the request through.
    pub store_errors: Vec<(String, Error)>,
    /// Rules whose app key was missing, empty or too long, as (rule, what was wrong; never the
    /// key itself): each was keyed by the client IP instead. Adapters log it once.
    pub key_errors: Vec<(String, String)>,
    pub headers: Vec<(&'static str, String)>,
    /// The 429 body when some rule denied.
    pub body: Option<String>,
}

impl RuleOutcome {
    pub fn allowed(&self) -> bool {
        self.body.is_none()
    }

    /// The decision a single-limit client hears about (the legacy headers' choice); never a
    /// shadow rule's.
    pub fn binding(&self) -> Option<&Decision> {
        crate::web::headers::binding(&self.enforced())
    }

    /// (rule, decision) of the rules that are enforced: what the headers and the body describe.
    fn enforced(&self) -> Vec<(&str, &Decision)> {
        self.decided.iter().filter(|d| !d.shadow).map(|d| (d.rule.as_str(), &d.decision)).collect()
    }

    /// Some rule was answered by the fallback policy.
    pub fn fallback_rules(&self) -> impl Iterator<Item = &str> {
        self.decided.iter().filter(|d| d.decision.source == Source::Fallback).map(|d| d.rule.as_str())
    }
}

/// An app key as given, or what is wrong with it (its length, never its text).
fn app_key_problem(rule: &str, key: Option<String>) -> std::result::Result<String, String> {
    match key {
        None => Err("the key function gave no key (None, null or undefined)".into()),
        Some(k) if k.trim().is_empty() => Err("the key function gave an empty key".into()),
        Some(k) if rule_identity(rule, &k).len() > MAX_IDENTITY => Err(format!(
            "the key function gave a key of {} bytes; at most {} are accepted",
            k.len(),
            MAX_IDENTITY - rule.len() - 1
        )),
        Some(k) => Ok(k),
    }
}

/// A rule's bucket: the rule name with the key, so two rules never share counts.
pub fn rule_identity(rule: &str, key: &str) -> String {
    format!("{rule}|{key}")
}

/// A scope whose key takes no verification: IP, endpoint and global parts only.
fn needs_no_identity(scope: Option<&KeyScope>) -> bool {
    scope.is_some_and(|s| s.parts().iter().all(|p| !matches!(p, KeyPart::User | KeyPart::ApiKey)))
}

impl RuleSet {
    /// Refuses rules whose keys could not be trusted: an `api_key` part with no way to verify keys
    /// (every invented key would get a fresh bucket), or keyed-hash API key buckets in a shared
    /// store without a shared secret (each instance would count the same key apart).
    pub fn new(resolver: KeyResolver, rules: Vec<Rule>, style: HeaderStyle) -> Result<Self> {
        let api_key_rules: Vec<&Rule> =
            rules.iter().filter(|r| r.scope.as_ref().is_some_and(|s| s.parts().contains(&KeyPart::ApiKey))).collect();
        let keys = resolver.api_keys();
        if let Some(r) = api_key_rules.first() {
            if !keys.can_verify() {
                return Err(Error::config(
                    "key scope",
                    r.scope.as_ref().map(ToString::to_string).unwrap_or_default(),
                    format!(
                        "rule {:?} keys by API key, but no way to verify keys is configured: give an allow-list, \
                         a signing secret or a verify callback (an unverified key would get a bucket of its own)",
                        r.name
                    ),
                ));
            }
        }
        if keys.hashes_keys() && keys.secret_is_ephemeral() {
            if let Some(r) = api_key_rules.iter().find(|r| r.limiter.store_kind() != Source::Memory) {
                return Err(Error::config(
                    "key secret",
                    "<none>",
                    format!(
                        "rule {:?} keeps API key buckets in Redis, named by a keyed hash of the key: every \
                         instance needs the same secret (set {} or pass a key secret of at least 32 bytes)",
                        r.name,
                        crate::secret::SECRET_ENV
                    ),
                ));
            }
        }
        Ok(RuleSet { resolver, rules, style })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn resolver(&self) -> &KeyResolver {
        &self.resolver
    }

    /// Decide every rule that applies, together. `app_key(rule)` gives the key of a rule without
    /// a scope. A store error reaches the caller only as `store_errors`, and a missing, empty or
    /// over-long app key only as `key_errors` (that request is keyed by its client IP): neither
    /// fails the request.
    pub async fn decide(&self, req: &HttpRequest<'_>, app_key: impl Fn(&str) -> Option<String>) -> Result<RuleOutcome> {
        let path_only = req.path.split(['?', '#']).next().unwrap_or("");
        let info = RequestInfo {
            peer: req.peer,
            forwarded_for: req.forwarded_for,
            authorization: req.authorization,
            api_key: req.api_key,
            api_key_verdict: req.api_key_verdict,
            method: req.method,
            route: req.route.filter(|r| !r.is_empty()).unwrap_or(path_only),
        };
        let matching: Vec<&Rule> = self.rules.iter().filter(|r| r.applies(req.method, req.path)).collect();
        let mut out = RuleOutcome {
            matched: false,
            key: None,
            forwarded_for_ignored: false,
            user_verified: false,
            api_key_rejected: false,
            identity_skipped: false,
            decided: Vec::new(),
            shadow_denied: Vec::new(),
            store_errors: Vec::new(),
            key_errors: Vec::new(),
            headers: Vec::new(),
            body: None,
        };
        if matching.is_empty() {
            return Ok(out);
        }
        // Two rounds only when a token would cost a signature check and some rule can deny
        // without one; otherwise every rule is checked in one concurrent round.
        let (first, second): (Vec<&Rule>, Vec<&Rule>) =
            if self.would_verify(&matching, &info) && matching.iter().any(|r| needs_no_identity(r.scope.as_ref())) {
                matching.iter().partition(|r| needs_no_identity(r.scope.as_ref()))
            } else {
                (matching, Vec::new())
            };
        let mut resolved: Vec<(&KeyScope, &str, Option<String>)> = Vec::new();
        let mut keys: Vec<(usize, String)> = Vec::new();
        let mut round = first;
        let mut pending = second;
        loop {
            let (applying, round_keys) = self.keys_for(&round, req, &info, &app_key, &mut resolved, &mut out);
            out.matched |= !applying.is_empty();
            self.check_round(&applying, &round_keys, req, &mut out).await?;
            for (rule, key) in applying.iter().zip(round_keys) {
                let index = self.rules.iter().position(|r| std::ptr::eq(r, *rule)).unwrap_or(usize::MAX);
                keys.push((index, key));
            }
            if pending.is_empty() {
                break;
            }
            // Only an enforced denial ends the request here: a shadow rule's must not change
            // which rules are counted.
            if out.decided.iter().any(|d| !d.decision.allowed && !d.shadow) {
                out.identity_skipped = true;
                break;
            }
            round = std::mem::take(&mut pending);
        }
        if resolved.is_empty() {
            // Only application keys: still tell the adapter about an ignored X-Forwarded-For.
            out.forwarded_for_ignored = self.resolver.client_ip(&info).forwarded_for_ignored;
        }
        // Headers and the key follow the rules' configured order, whichever round decided them.
        out.decided.sort_by_key(|d| self.rules.iter().position(|r| r.name == d.rule));
        keys.sort_by_key(|(i, _)| *i);
        out.key = keys.into_iter().next().map(|(_, k)| k);
        out.shadow_denied =
            out.decided.iter().filter(|d| d.shadow && !d.decision.allowed).map(|d| d.rule.clone()).collect();
        let enforced = out.enforced();
        let (headers, body) = (merged_headers(&enforced, self.style), merged_limited_body(&enforced));
        out.headers = headers;
        out.body = body;
        Ok(out)
    }

    /// Some matching rule's key has a `user` part, and the request's bearer token is not one the
    /// verifier remembers: resolving it would check a signature.
    fn would_verify(&self, matching: &[&Rule], info: &RequestInfo) -> bool {
        let Some(jwt) = self.resolver.jwt() else { return false };
        let Some(token) = bearer_token(info.authorization) else { return false };
        matching.iter().any(|r| r.scope.as_ref().is_some_and(|s| s.parts().contains(&KeyPart::User)))
            && jwt.cached_subject(token).is_none()
    }

    /// The rules of `rules` that apply to this client, with their keys. Each distinct (scope,
    /// route) is resolved once per request. The route an `endpoint` part names is the framework's
    /// template when it knows one, else the rule's own pattern when that names one route, else the
    /// path (normalised by the resolver): never a spelling a client chose.
    fn keys_for<'s, 'r>(
        &'s self,
        rules: &[&'s Rule],
        req: &HttpRequest<'r>,
        info: &RequestInfo<'r>,
        app_key: &impl Fn(&str) -> Option<String>,
        resolved: &mut Vec<(&'s KeyScope, &'r str, Option<String>)>,
        out: &mut RuleOutcome,
    ) -> (Vec<&'s Rule>, Vec<String>)
    where
        's: 'r,
    {
        let mut applying = Vec::with_capacity(rules.len());
        let mut keys = Vec::with_capacity(rules.len());
        for rule in rules {
            let key = match &rule.scope {
                Some(scope) => {
                    let route = match (req.route.filter(|r| !r.is_empty()), &rule.route) {
                        (None, Some(r)) if scope.has_endpoint() => r.template().unwrap_or(info.route),
                        _ => info.route,
                    };
                    match resolved.iter().find(|(s, r, _)| *s == scope && *r == route) {
                        Some((_, _, k)) => k.clone(),
                        None => {
                            let r = self.resolver.resolve(scope, &RequestInfo { route, ..*info });
                            out.forwarded_for_ignored |= r.forwarded_for_ignored;
                            out.user_verified |= r.user_verified;
                            out.api_key_rejected |= r.api_key_rejected;
                            // A network part of the other address family: the rule is not for this client.
                            let key = r.applies.then_some(r.key);
                            resolved.push((scope, route, key.clone()));
                            key
                        }
                    }
                }
                None => Some(match app_key_problem(&rule.name, app_key(&rule.name)) {
                    Ok(k) => k,
                    Err(problem) => {
                        // Never one shared bucket for every keyless request, never a 500: the
                        // client's own IP bucket, as for an unverified identity.
                        out.key_errors.push((rule.name.clone(), problem));
                        let client = self.resolver.client_ip(info);
                        out.forwarded_for_ignored |= client.forwarded_for_ignored;
                        client.key
                    }
                }),
            };
            if let Some(key) = key {
                applying.push(*rule);
                keys.push(key);
            }
        }
        (applying, keys)
    }

    /// One concurrent check per rule, each in its own bucket.
    async fn check_round(
        &self,
        rules: &[&Rule],
        keys: &[String],
        req: &HttpRequest<'_>,
        out: &mut RuleOutcome,
    ) -> Result<()> {
        let checks = rules.iter().zip(keys).map(|(rule, key)| {
            let identity = rule_identity(&rule.name, key);
            let opts = CheckOptions::new(rule.cost, req.traceparent).shadow(rule.shadow);
            async move { rule.limiter.check_with(&identity, opts).await }
        });
        let results = futures::future::join_all(checks).await;
        for ((rule, key), result) in rules.iter().zip(keys).zip(results) {
            match result {
                Ok(decision) => out.decided.push(RuleDecision {
                    rule: rule.name.clone(),
                    key: key.clone(),
                    decision,
                    shadow: rule.shadow,
                }),
                // fallback "error": the limiter returned the store error. A request is never failed
                // for that; the rule lets it through and the adapter reports it.
                Err(e) if e.kind() == ErrorKind::Store => out.store_errors.push((rule.name.clone(), e)),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::{ApiKeyVerifier, ClientIpRule, JwtVerifier};
    use crate::{parse_limits, FallbackMode};

    fn rule(name: &str, path: Option<&str>, limits: &str, scope: Option<&str>) -> Rule {
        Rule {
            name: name.into(),
            route: path.map(|p| RouteRule::new(name, p, &[]).unwrap()),
            limiter: Limiter::in_memory(parse_limits(&[limits]).unwrap()).unwrap(),
            scope: scope.map(|s| KeyScope::parse(s).unwrap()),
            cost: 1,
            shadow: false,
        }
    }

    fn req<'a>(path: &'a str, peer: &'a str) -> HttpRequest<'a> {
        HttpRequest {
            method: "GET",
            path,
            route: None,
            peer,
            forwarded_for: None,
            authorization: None,
            api_key: None,
            api_key_verdict: None,
            traceparent: None,
        }
    }

    fn set(rules: Vec<Rule>) -> RuleSet {
        RuleSet::new(KeyResolver::new(ClientIpRule::new::<&str>(&[], 64).unwrap(), None), rules, HeaderStyle::Draft10)
            .unwrap()
    }

    fn with_resolver(resolver: KeyResolver, rules: Vec<Rule>) -> RuleSet {
        RuleSet::new(resolver, rules, HeaderStyle::Draft10).unwrap()
    }

    fn key_secret() -> crate::secret::KeySecret {
        crate::secret::KeySecret::new("test", &[5u8; 32]).unwrap()
    }

    #[tokio::test]
    async fn invented_api_keys_share_the_ip_bucket() {
        // The review's bypass: 50 random keys from one IP at 2/minute all passed, even with api_key+ip.
        for scope in ["api_key", "api_key+ip"] {
            let keys = ApiKeyVerifier::new().key_secret(key_secret()).allow(&["sk_live_real"]).unwrap();
            let s = with_resolver(
                KeyResolver::new(ClientIpRule::default(), None).with_api_keys(keys),
                vec![rule("api", None, "2/minute", Some(scope))],
            );
            let mut passed = 0;
            for i in 0..50 {
                let key = format!("sk_random_{i}");
                let d = s.decide(&HttpRequest { api_key: Some(&key), ..req("/", "203.0.113.9") }, |_| None).await;
                let d = d.unwrap();
                assert!(d.api_key_rejected, "{scope}: {d:?}");
                passed += usize::from(d.allowed());
            }
            assert_eq!(passed, 2, "{scope}");
            // A real key has its own bucket.
            let real = HttpRequest { api_key: Some("sk_live_real"), ..req("/", "203.0.113.9") };
            let d = s.decide(&real, |_| None).await.unwrap();
            assert!(d.allowed() && !d.api_key_rejected && d.key.as_deref().unwrap().starts_with("apikey:#"), "{d:?}");
        }
    }

    #[tokio::test]
    async fn the_app_callback_verdict_picks_the_bucket() {
        let keys = ApiKeyVerifier::new().key_secret(key_secret()).app_callback();
        let s = with_resolver(
            KeyResolver::new(ClientIpRule::default(), None).with_api_keys(keys),
            vec![rule("api", None, "5/minute", Some("api_key"))],
        );
        let base = HttpRequest { api_key: Some("k1"), ..req("/", "203.0.113.10") };
        let cases: &[(Option<AppVerdict>, &str, bool)] = &[
            (Some(AppVerdict::AcceptAs("acct-1")), "apikey:acct-1", false),
            (Some(AppVerdict::Reject), "ip:203.0.113.10", true),
            (None, "ip:203.0.113.10", true),
        ];
        for (verdict, key, rejected) in cases {
            let d = s.decide(&HttpRequest { api_key_verdict: *verdict, ..base }, |_| None).await.unwrap();
            assert_eq!((d.key.as_deref(), d.api_key_rejected), (Some(*key), *rejected), "{verdict:?}");
        }
    }

    #[test]
    fn api_key_scopes_without_verification_are_refused() {
        let bare = || KeyResolver::new(ClientIpRule::default(), None);
        for scope in ["api_key", "api_key+ip", "user+apikey"] {
            let e = RuleSet::new(bare(), vec![rule("k", None, "2/minute", Some(scope))], HeaderStyle::Draft10)
                .err()
                .unwrap_or_else(|| panic!("{scope} accepted"));
            assert!(e.to_string().contains("no way to verify keys") && e.to_string().contains("\"k\""), "{e}");
            assert_eq!(e.kind(), ErrorKind::Config);
        }
        assert!(RuleSet::new(bare(), vec![rule("k", None, "2/minute", Some("ip"))], HeaderStyle::Draft10).is_ok());

        // Hashed buckets in Redis need a secret every instance shares; a signed id does not.
        let redis = || Rule {
            name: "shared".into(),
            route: None,
            limiter: Limiter::builder(parse_limits(&["1/minute"]).unwrap())
                .redis_url("redis://127.0.0.1:1")
                .build()
                .unwrap(),
            scope: Some(KeyScope::parse("api_key").unwrap()),
            cost: 1,
            shadow: false,
        };
        let ephemeral = ApiKeyVerifier::new().key_secret(crate::secret::KeySecret::random());
        let listed = ephemeral.clone().allow(&["k"]).unwrap();
        let refuse = |keys: ApiKeyVerifier| {
            RuleSet::new(bare().with_api_keys(keys), vec![redis()], HeaderStyle::Draft10).err().map(|e| e.to_string())
        };
        let e = refuse(listed).expect("ephemeral secret with Redis");
        assert!(e.contains("FLOODWALL_KEY_SECRET") && e.contains("\"shared\""), "{e}");
        assert!(refuse(ephemeral.clone().app_callback()).is_some());
        assert!(refuse(ephemeral.signed(&[1u8; 32]).unwrap()).is_none(), "signed ids need no hash");
        assert!(refuse(ApiKeyVerifier::new().key_secret(key_secret()).allow(&["k"]).unwrap()).is_none());
    }

    #[tokio::test]
    async fn ip_denial_short_circuits_verification() {
        use crate::web::test_keys::EC_PUBLIC;
        let jwt = JwtVerifier::es256_pem(EC_PUBLIC).unwrap();
        let s = with_resolver(
            KeyResolver::new(ClientIpRule::default(), Some(jwt.clone())),
            vec![rule("ip", None, "2/minute", Some("ip")), rule("user", None, "100/minute", Some("user"))],
        );
        let junk = |i: usize| format!("Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.{i}{}", "A".repeat(85));
        let tokens: Vec<String> = (0..10).map(junk).collect();
        let mut outcomes = Vec::new();
        for t in &tokens {
            outcomes
                .push(s.decide(&HttpRequest { authorization: Some(t), ..req("/", "198.51.100.7") }, |_| None).await);
        }
        let outcomes: Vec<RuleOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
        assert_eq!(outcomes.iter().filter(|o| o.allowed()).count(), 2);
        assert_eq!(jwt.verifications(), 2, "only the requests the IP rule allowed verified their token");
        let denied = &outcomes[5];
        assert!(denied.identity_skipped && denied.decided.len() == 1 && denied.body.is_some(), "{denied:?}");
        assert_eq!(denied.key.as_deref(), Some("ip:198.51.100.7"));
        // Allowed ones went through both rounds; headers and key follow the rule order.
        let first = &outcomes[0];
        assert!(!first.identity_skipped && first.decided.len() == 2);
        assert_eq!((first.decided[0].rule.as_str(), first.decided[1].rule.as_str()), ("ip", "user"));

        // A remembered token needs no second round: both rules in one, and counted.
        let again = HttpRequest { authorization: Some(&tokens[0]), ..req("/", "198.51.100.8") };
        let good = s.decide(&again, |_| None).await.unwrap();
        assert!(good.allowed() && good.decided.len() == 2 && !good.identity_skipped);
        assert_eq!(jwt.verifications(), 2, "tokens[0] was remembered");
        // Without an IP-only rule there is nothing to decide first.
        let only_user = with_resolver(
            KeyResolver::new(ClientIpRule::default(), Some(jwt.clone())),
            vec![rule("user", None, "1/minute", Some("user"))],
        );
        let fresh = junk(99);
        let one = HttpRequest { authorization: Some(&fresh), ..req("/", "198.51.100.9") };
        let d = only_user.decide(&one, |_| None).await.unwrap();
        assert!(d.allowed() && !d.identity_skipped && d.key.as_deref() == Some("ip:198.51.100.9"));
        assert_eq!(jwt.verifications(), 3);
    }

    #[tokio::test]
    async fn matching_rules_decide_together_in_their_own_buckets() {
        let s = set(vec![
            rule("site", None, "3/minute", Some("ip")),
            rule("login", Some("/login"), "1/minute", Some("ip")),
        ]);
        let first = s.decide(&req("/login", "203.0.113.7"), |_| None).await.unwrap();
        assert!(first.allowed() && first.decided.len() == 2, "{first:?}");
        assert_eq!(first.key.as_deref(), Some("ip:203.0.113.7"));
        let denied = s.decide(&req("/login", "203.0.113.7"), |_| None).await.unwrap();
        assert!(!denied.allowed() && denied.body.is_some());
        assert_eq!(denied.binding().unwrap().limited_by.unwrap().to_string(), "1/minute");
        assert!(
            denied.headers.iter().any(|(n, v)| *n == "RateLimit-Policy" && v.contains("q=3") && v.contains("q=1")),
            "{:?}",
            denied.headers
        );
        // other paths only see the site rule, whose bucket is not the login rule's
        let other = s.decide(&req("/items", "203.0.113.7"), |_| None).await.unwrap();
        assert_eq!(other.decided.len(), 1);
        assert_eq!(other.decided[0].decision.remaining, 0, "site counted all three requests");
        let none = s.decide(&req("/x", "203.0.113.7"), |_| None).await;
        assert!(!none.unwrap().allowed(), "site limit reached");
    }

    #[tokio::test]
    async fn a_shadow_rule_counts_and_reports_but_never_denies() {
        let resolver = KeyResolver::new(ClientIpRule::new::<&str>(&[], 64).unwrap(), None);
        let s = RuleSet::new(
            resolver,
            vec![rule("site", None, "3/minute", Some("ip")), rule("trial", None, "1/minute", Some("ip")).shadow(true)],
            HeaderStyle::Both,
        )
        .unwrap();
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            outcomes.push(s.decide(&req("/", "203.0.113.7"), |_| None).await.unwrap());
        }
        for (i, o) in outcomes.iter().enumerate() {
            // The shadow rule decided (and counted) every time, in its own bucket.
            let trial = o.decided.iter().find(|d| d.rule == "trial").expect("trial decided");
            assert!(trial.shadow && trial.decision.allowed == (i == 0), "{i}: {trial:?}");
            assert_eq!(o.shadow_denied, if i == 0 { vec![] } else { vec!["trial".to_string()] }, "{i}");
            // Its limit is never in the headers: only the site rule's 3/minute is.
            let policy = o.headers.iter().find(|(n, _)| *n == "RateLimit-Policy").map(|(_, v)| v.as_str());
            assert_eq!(policy, Some(r#""per-minute";q=3;w=60"#), "{i}: {:?}", o.headers);
            let legacy = o.headers.iter().find(|(n, _)| *n == "X-RateLimit-Limit").map(|(_, v)| v.as_str());
            assert_eq!(legacy, Some("3"), "{i}: the legacy trio describes the enforced rule");
            assert_eq!(o.binding().unwrap().limit, 3, "{i}");
        }
        // Past its limit, the shadow rule lets requests through without a Retry-After.
        for o in &outcomes[1..3] {
            assert!(o.allowed() && o.body.is_none(), "{o:?}");
            assert!(!o.headers.iter().any(|(n, _)| *n == "Retry-After"), "{:?}", o.headers);
        }
        // The enforced rule beside it still denies, with its own headers and body.
        let denied = &outcomes[3];
        assert!(!denied.allowed(), "{denied:?}");
        assert!(denied.body.as_deref().unwrap().contains(r#""limit":"3/minute""#), "{:?}", denied.body);
        assert!(denied.headers.iter().any(|(n, _)| *n == "Retry-After"));
        let rate = denied.headers.iter().find(|(n, _)| *n == "RateLimit").unwrap();
        assert!(rate.1.starts_with(r#""per-minute";r=0;"#) && !rate.1.contains(','), "{rate:?}");

        // Metrics: the shadow rule's denials are shadow_denied, never denied.
        let trial = s.rules().iter().find(|r| r.name == "trial").unwrap().limiter.metrics().snapshot();
        let site = s.rules().iter().find(|r| r.name == "site").unwrap().limiter.metrics().snapshot();
        let count = |m: &crate::MetricsSnapshot, allowed: bool| {
            m.decisions.iter().filter(|(_, a, _)| *a == allowed).map(|(_, _, n)| n).sum::<u64>()
        };
        assert_eq!((count(&trial, true), count(&trial, false), trial.shadow_denied_total()), (1, 0, 3));
        assert_eq!((count(&site, true), count(&site, false), site.shadow_denied_total()), (3, 1, 0));
        assert_eq!(
            trial.shadow_denied,
            vec![
                (Source::Redis, 0),
                (Source::Memory, 3),
                (Source::Cache, 0),
                (Source::Lease, 0),
                (Source::Fallback, 0)
            ]
        );

        // Only shadow rules: the request matched, nothing is sent, nothing is denied.
        let only = set(vec![rule("trial", Some("/search"), "1/minute", Some("ip")).shadow(true)]);
        only.decide(&req("/search", "203.0.113.8"), |_| None).await.unwrap();
        let o = only.decide(&req("/search", "203.0.113.8"), |_| None).await.unwrap();
        assert!(o.matched && o.allowed() && o.headers.is_empty() && o.body.is_none(), "{o:?}");
        assert_eq!(o.shadow_denied, ["trial"]);
        assert!(o.binding().is_none());
    }

    #[tokio::test]
    async fn a_shadow_ip_denial_does_not_skip_the_identity_rules() {
        use crate::web::test_keys::EC_PUBLIC;
        let jwt = JwtVerifier::es256_pem(EC_PUBLIC).unwrap();
        let s = with_resolver(
            KeyResolver::new(ClientIpRule::default(), Some(jwt.clone())),
            vec![rule("ip", None, "2/minute", Some("ip")).shadow(true), rule("user", None, "100/minute", Some("user"))],
        );
        for i in 0..6 {
            let token = format!("Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.{i}{}", "A".repeat(85));
            let d = s.decide(&HttpRequest { authorization: Some(&token), ..req("/", "198.51.100.7") }, |_| None).await;
            let d = d.unwrap();
            assert!(d.allowed() && !d.identity_skipped && d.decided.len() == 2, "{i}: {d:?}");
            assert_eq!(d.shadow_denied.len(), usize::from(i >= 2), "{i}");
        }
        assert_eq!(jwt.verifications(), 6, "every request reached the user rule");
        let user = s.rules()[1].limiter.metrics().snapshot();
        assert_eq!(user.decisions_from(Source::Memory), 6, "the user rule counted every request");
    }

    #[tokio::test]
    async fn endpoint_keys_name_the_rule_pattern_not_the_spelling() {
        // A rule in app-level middleware, where the framework has not routed yet (no template):
        // ten spellings of /login are one bucket, as they reach one handler.
        let s = set(vec![rule("login", Some("/login"), "2/minute", Some("endpoint+ip"))]);
        let spellings = [
            "/login",
            "/LOGIN",
            "/login/",
            "//login",
            "/Login",
            "/log%69n",
            "/LOGIN/",
            "/login?x=1",
            "/lOgIn",
            "/login//",
        ];
        let mut allowed = 0;
        for p in spellings {
            let d = s.decide(&req(p, "203.0.113.7"), |_| None).await.unwrap();
            assert_eq!(d.key.as_deref(), Some("ep:GET /login|ip:203.0.113.7"), "{p}");
            allowed += usize::from(d.allowed());
        }
        assert_eq!(allowed, 2);

        // A wildcard rule names no single route: the normalised path, and HEAD is GET.
        let s = set(vec![rule("items", Some("/items/*"), "1/minute", Some("endpoint"))]);
        let head = HttpRequest { method: "HEAD", ..req("/ITEMS/2/", "203.0.113.7") };
        let d = s.decide(&head, |_| None).await.unwrap();
        assert_eq!(d.key.as_deref(), Some("ep:GET /items/2"));
        assert!(!s.decide(&req("/items/2", "203.0.113.8"), |_| None).await.unwrap().allowed(), "HEAD spent GET's");
        // The framework's template wins over both.
        let templated = HttpRequest { route: Some("/items/{id}"), ..req("/items/3", "203.0.113.7") };
        assert_eq!(s.decide(&templated, |_| None).await.unwrap().key.as_deref(), Some("ep:GET /items/{id}"));
    }

    #[tokio::test]
    async fn network_aggregates_on_top_of_per_client_keys() {
        let s = set(vec![
            rule("client", None, "2/minute", Some("ip")),
            rule("net48", None, "5/minute", Some("ipv6/48")),
            rule("net24", None, "3/minute", Some("ipv4/24")),
        ]);
        // Thirty /64s of one /48: each has its own client bucket, but they share the /48's.
        let mut allowed = 0;
        for i in 0..30 {
            let peer = format!("2001:db8:42:{i:x}::1");
            let d = s.decide(&req("/", &peer), |_| None).await.unwrap();
            assert_eq!(d.decided.len(), 2, "the IPv4 rule does not apply to an IPv6 client");
            allowed += usize::from(d.allowed());
        }
        assert_eq!(allowed, 5);
        let other48 = s.decide(&req("/", "2001:db8:43::1"), |_| None).await.unwrap();
        assert!(other48.allowed());
        let mut allowed = 0;
        for i in 1..=10 {
            let d = s.decide(&req("/", &format!("198.51.100.{i}")), |_| None).await.unwrap();
            assert_eq!(d.decided.iter().map(|d| d.rule.as_str()).collect::<Vec<_>>(), ["client", "net24"]);
            allowed += usize::from(d.allowed());
        }
        assert_eq!(allowed, 3);
        // A rule whose only key is the other family's network leaves the request unmatched.
        let v4 = set(vec![rule("net24", None, "1/minute", Some("ipv4/24"))]);
        let d = v4.decide(&req("/", "2001:db8::1"), |_| None).await.unwrap();
        assert!(!d.matched && d.allowed() && d.headers.is_empty(), "{d:?}");
    }

    #[tokio::test]
    async fn app_keys_and_store_errors() {
        let s = set(vec![rule("fn", None, "1/minute", None)]);
        let d = s.decide(&req("/", "198.51.100.1"), |r| Some(format!("tenant:{r}"))).await.unwrap();
        assert_eq!(d.key.as_deref(), Some("tenant:fn"));

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let down = Limiter::builder(parse_limits(&["1/minute"]).unwrap())
            .redis_url(format!("redis://127.0.0.1:{port}"))
            .fallback(FallbackMode::Error)
            .build()
            .unwrap();
        let s = set(vec![Rule {
            name: "down".into(),
            route: None,
            limiter: down,
            scope: Some(KeyScope::parse("ip").unwrap()),
            cost: 1,
            shadow: false,
        }]);
        let d = s.decide(&req("/", "198.51.100.1"), |_| None).await.unwrap();
        assert!(d.allowed() && d.decided.is_empty() && d.store_errors.len() == 1, "{d:?}");
    }

    #[tokio::test]
    async fn bad_app_keys_fall_back_to_the_client_ip_never_to_a_shared_bucket() {
        let long = "k".repeat(MAX_IDENTITY);
        let cases: [(&str, Option<&str>, &str); 4] = [
            ("missing", None, "gave no key"),
            ("empty", Some(""), "empty key"),
            ("blank", Some("  "), "empty key"),
            ("too long", Some(&long), &format!("key of {MAX_IDENTITY} bytes")),
        ];
        for (case, key, problem) in cases {
            let s = set(vec![rule("fn", None, "1/minute", None)]);
            let a = s.decide(&req("/", "198.51.100.1"), |_| key.map(String::from)).await;
            let a = a.unwrap_or_else(|e| panic!("{case}: the request failed: {e}"));
            assert!(a.allowed(), "{case}: {a:?}");
            assert_eq!(a.key.as_deref(), Some("ip:198.51.100.1"), "{case}");
            assert_eq!(a.key_errors.len(), 1, "{case}");
            let (rule, message) = &a.key_errors[0];
            assert!(rule == "fn" && message.contains(problem), "{case}: {message}");
            assert!(!message.contains("kkkk"), "{case}: the key is not echoed: {message}");
            // another client gets its own bucket, not a shared "None" one
            let b = s.decide(&req("/", "198.51.100.2"), |_| key.map(String::from)).await.unwrap();
            assert!(b.allowed(), "{case}: a second client shares the first one's bucket");
            let again = s.decide(&req("/", "198.51.100.1"), |_| key.map(String::from)).await.unwrap();
            assert!(!again.allowed(), "{case}: the first client's own bucket counts");
        }
        // the longest key that fits is taken as it is
        let fits = "k".repeat(MAX_IDENTITY - "fn|".len());
        let s = set(vec![rule("fn", None, "1/minute", None)]);
        let d = s.decide(&req("/", "198.51.100.1"), |_| Some(fits.clone())).await.unwrap();
        assert!(d.key_errors.is_empty() && d.key.as_deref() == Some(fits.as_str()));
    }

    #[test]
    fn a_cost_above_the_limit_is_refused_when_the_rule_is_built() {
        let limiter = || Limiter::in_memory(parse_limits(&["5/minute", "100/hour"]).unwrap()).unwrap();
        let e = Rule::new("login", None, limiter(), None, 6).err().expect("cost 6 over a limit of 5");
        let msg = e.to_string();
        assert!(msg.contains("\"6\"") && msg.contains("limit of 5") && msg.contains("\"login\""), "{msg}");
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(Rule::new("login", None, limiter(), None, 0).is_err());
        assert_eq!(Rule::new("login", None, limiter(), None, 5).unwrap().cost, 5);
    }
}
