//! `HttpLimiter`: the engine behind `floodwall/express`. One native call per request resolves the
//! key (client IP behind trusted proxies, verified JWT subject, API key, route), decides every
//! matching rule together and formats the headers and 429 body, all with `floodwall::web`.

use std::sync::Arc;

use floodwall::secret::KeySecret;
use floodwall::web::{
    ApiKeyVerifier, ClientIpRule, ForwardedHeader, HeaderStyle, JwtVerifier, KeyPart, KeyResolver, KeyScope,
    OwnedVerdict, PathStyle, RouteRule, Rule, RuleSet, DEFAULT_IPV6_PREFIX,
};
use napi::bindgen_prelude::{Buffer, ClassInstance, FromNapiValue, JavaScriptClassExt, Object, PromiseRaw, Unknown};
use napi::{Env, JsValue, ValueType};
use napi_derive::napi;

use crate::args;
use crate::error::{guard, throw, Failure, Outcome};
use crate::limiter::{build_limiter, nullable, settle, JsLimiter, Nullable, LIMITER_OPTIONS};

/// Options the native side reads; express.js handles the rest (skip, logger, handler, ...).
const HTTP_OPTIONS: &[&str] = &[
    "name",
    "limits",
    "algorithm",
    "redisUrl",
    "clusterNodes",
    "prefix",
    "timeoutMs",
    "fallback",
    "breaker",
    "cache",
    "clock",
    "maxIdentities",
    "limiter",
    "key",
    "cost",
    "trustedProxies",
    "ipv6Prefix",
    "forwardedHeader",
    "trustUnixSocket",
    "jwt",
    "apiKeys",
    "headers",
    "rules",
    "shadow",
];
const RULE_OPTIONS: &[&str] = &[
    "name",
    "path",
    "methods",
    "limits",
    "algorithm",
    "redisUrl",
    "clusterNodes",
    "prefix",
    "timeoutMs",
    "fallback",
    "breaker",
    "cache",
    "clock",
    "maxIdentities",
    "limiter",
    "key",
    "cost",
    "shadow",
];
/// Options that build a limiter. `name` is not one of them here: it names the middleware or the
/// rule (headers, keys), and the limiter built for it takes that name as its metrics label.
const LIMITER_KEYS: &[&str] = LIMITER_OPTIONS.split_at(1).1;
const JWT_OPTIONS: &[&str] = &["secret", "publicKey", "algorithm", "issuer", "audience", "leewaySecs", "requireExp"];
const API_KEY_OPTIONS: &[&str] = &["allow", "signingSecret", "verify", "keySecret"];

/// A store failure, reported to the adapter instead of failing the request.
#[napi(object)]
pub struct StoreFailure {
    pub rule: String,
    pub code: String,
    pub message: String,
}

/// The outcome for one request.
#[napi(object)]
pub struct HttpDecision {
    /// Some rule applied to this request.
    pub matched: bool,
    /// Every rule that could decide allowed it (a rule whose store failed with fallback 'error'
    /// counts as allowing).
    pub allowed: bool,
    /// 200 or 429.
    pub status: u32,
    /// Response headers as flat pairs: [name, value, name, value, ...].
    pub headers: Vec<String>,
    /// The JSON body of a 429, else null.
    pub body: Nullable<String>,
    /// The key of the first matching rule (e.g. "ip:203.0.113.7").
    pub key: Nullable<String>,
    /// X-Forwarded-For arrived from a peer that is not a trusted proxy, and was ignored.
    pub forwarded_for_ignored: bool,
    /// A `user` key part came from a verified JWT.
    pub user_verified: bool,
    /// An API key was sent and did not verify (a failed lookup): the request was keyed by IP.
    pub api_key_rejected: bool,
    /// The binding decision (the denial with the longest wait, else the fewest remaining); times
    /// in seconds. 0 / null when no rule decided.
    pub limit: f64,
    pub remaining: f64,
    pub reset_after: f64,
    pub retry_after: Nullable<f64>,
    pub limited_by: Nullable<String>,
    /// The rules that matched, in order.
    pub rules: Vec<String>,
    /// Shadow rules that would have denied the request (it was not denied for them), in order.
    pub shadow_denied: Vec<String>,
    /// Rules that Redis could not decide, answered by their fallback policy.
    pub fallback_rules: Vec<String>,
    /// Rules whose store failed with fallback 'error'; the request was allowed by them.
    pub store_errors: Vec<StoreFailure>,
    /// Rules whose key from the key function was missing (undefined/null), empty or too long:
    /// they keyed the request by its client IP. The message never holds the key.
    pub key_errors: Vec<KeyFailure>,
}

/// A rule whose app key could not be used.
#[napi(object)]
pub struct KeyFailure {
    pub rule: String,
    pub message: String,
}

/// The limiter of the middleware or of a rule: a shared `limiter`, or one built from `limits` and
/// its options, labelled `name` on metrics.
fn limiter_for(env: &Env, obj: &Object, what: &str, name: &str) -> Outcome<Option<floodwall::Limiter>> {
    if let Some(v) = args::field(obj, "limiter")? {
        if LIMITER_KEYS.iter().any(|k| args::field(obj, k).ok().flatten().is_some()) {
            return Err(Failure::Arg(format!(
                "{what}: give either `limiter` or `limits` (with algorithm, redisUrl, ...), not both"
            )));
        }
        if !JsLimiter::instance_of(env, &v)? {
            return Err(Failure::Arg(format!("invalid limiter {}: must be a floodwall Limiter", args::describe(&v))));
        }
        let l = unsafe { ClassInstance::<JsLimiter>::from_napi_value(env.raw(), v.raw()) }?;
        return Ok(Some(l.inner.clone()));
    }
    if args::field(obj, "limits")?.is_none() {
        for k in LIMITER_KEYS {
            if args::field(obj, k)?.is_some() {
                return Err(Failure::Arg(format!("{what}: `{k}` was given without `limits`")));
            }
        }
        return Ok(None);
    }
    // Re-read only the limiter keys: build_limiter refuses anything else.
    let sub = Object::new(env)?;
    let mut sub = sub;
    sub.set("name", name)?;
    for k in LIMITER_KEYS {
        if let Some(v) = args::field(obj, k)? {
            sub.set(k, v)?;
        }
    }
    let sub = sub.to_unknown();
    Ok(Some(build_limiter(env, Some(&sub))?))
}

fn scope_for(obj: &Object) -> Outcome<Option<KeyScope>> {
    match args::field(obj, "key")? {
        Some(v) if args::type_of(&v) == ValueType::Function => Ok(None),
        Some(v) => Ok(Some(KeyScope::parse(&args::string("key", &v)?)?)),
        None => Ok(Some(KeyScope::parse("ip")?)),
    }
}

/// `shadow: true`: the rule decides and counts but never denies and sends no headers.
fn shadow_for(obj: &Object, what: &str) -> Outcome<bool> {
    match args::field(obj, "shadow")? {
        Some(v) => args::boolean(what, &v),
        None => Ok(false),
    }
}

fn cost_for(obj: &Object) -> Outcome<u64> {
    match args::field(obj, "cost")? {
        Some(v) => args::whole("cost", &v, 1),
        None => Ok(1),
    }
}

fn jwt_for(obj: &Object) -> Outcome<Option<JwtVerifier>> {
    let Some(v) = args::field(obj, "jwt")? else { return Ok(None) };
    let Some(j) = args::options("jwt option", Some(&v), JWT_OPTIONS)? else { return Ok(None) };
    let secret = args::field(&j, "secret")?;
    let public_key = args::field(&j, "publicKey")?;
    let algorithm = args::field(&j, "algorithm")?.map(|a| args::string("jwt.algorithm", &a)).transpose()?;
    let verifier = match (secret, public_key) {
        (Some(_), Some(_)) => {
            return Err(Failure::Arg("jwt: give either `secret` (HS256) or `publicKey` (RS256/ES256), not both".into()))
        }
        (None, None) => {
            return Err(Failure::Arg(
                "jwt: give `secret` (HS256) or `publicKey` with algorithm 'RS256' or 'ES256'".into(),
            ))
        }
        (Some(s), None) => {
            if let Some(a) = algorithm.as_deref().filter(|a| !a.eq_ignore_ascii_case("HS256")) {
                return Err(Failure::Arg(format!(
                    "invalid jwt.algorithm {a:?}: a `secret` means HS256; use `publicKey` for RS256/ES256"
                )));
            }
            let bytes = if args::type_of(&s) == ValueType::String {
                args::string("jwt.secret", &s)?.into_bytes()
            } else {
                match unsafe { Buffer::from_napi_value(s.value().env, s.raw()) } {
                    Ok(b) => b.to_vec(),
                    Err(_) => {
                        return Err(Failure::Arg(format!(
                            "invalid jwt.secret {}: must be a string or a Buffer",
                            shown_type(&s)
                        )))
                    }
                }
            };
            JwtVerifier::hs256(&bytes)?
        }
        (None, Some(k)) => {
            let pem = args::string("jwt.publicKey", &k)
                .map_err(|_| Failure::Arg(format!("invalid jwt.publicKey {}: must be a PEM string", shown_type(&k))))?;
            match algorithm.as_deref().map(str::to_ascii_uppercase).as_deref() {
                Some("RS256") | None => JwtVerifier::rs256_pem(&pem)?,
                Some("ES256") => JwtVerifier::es256_pem(&pem)?,
                Some(_) => {
                    return Err(Failure::Arg(format!(
                        "invalid jwt.algorithm {:?}: expected 'RS256' or 'ES256' with a publicKey",
                        algorithm.unwrap_or_default()
                    )))
                }
            }
        }
    };
    let mut verifier = verifier;
    if let Some(v) = args::field(&j, "issuer")? {
        verifier = verifier.with_issuer(&args::string("jwt.issuer", &v)?);
    }
    if let Some(v) = args::field(&j, "audience")? {
        verifier = verifier.with_audience(&args::string("jwt.audience", &v)?);
    }
    if let Some(v) = args::field(&j, "leewaySecs")? {
        verifier = verifier.with_leeway_secs(args::whole("jwt.leewaySecs", &v, 0)?);
    }
    if let Some(v) = args::field(&j, "requireExp")? {
        verifier = verifier.with_required_exp(args::boolean("jwt.requireExp", &v)?);
    }
    Ok(Some(verifier))
}

/// A string or a Buffer; the value itself is never echoed.
fn secret_bytes(what: &str, v: &Unknown) -> Outcome<Vec<u8>> {
    if args::type_of(v) == ValueType::String {
        return Ok(args::string(what, v)?.into_bytes());
    }
    match unsafe { Buffer::from_napi_value(v.value().env, v.raw()) } {
        Ok(b) => Ok(b.to_vec()),
        Err(_) => Err(Failure::Arg(format!("invalid {what} {}: must be a string or a Buffer", shown_type(v)))),
    }
}

/// `apiKeys: { allow, signingSecret, verify, keySecret }`. The `verify` function stays in
/// JavaScript (express.js calls it and passes its answer); here it only says keys are verified so.
fn api_keys_for(obj: &Object) -> Outcome<ApiKeyVerifier> {
    let Some(v) = args::field(obj, "apiKeys")? else { return Ok(ApiKeyVerifier::new()) };
    let Some(o) = args::options("apiKeys option", Some(&v), API_KEY_OPTIONS)? else {
        return Ok(ApiKeyVerifier::new());
    };
    let mut keys = ApiKeyVerifier::new();
    // The explicit secret, else FLOODWALL_KEY_SECRET (an error if set but too short), else one made
    // for this process (refused by RuleSet::new when the buckets live in Redis).
    let secret = match args::field(&o, "keySecret")? {
        Some(s) => Some(KeySecret::new("apiKeys.keySecret", &secret_bytes("apiKeys.keySecret", &s)?)?),
        None => KeySecret::from_env()?,
    };
    if let Some(s) = secret {
        keys = keys.key_secret(s);
    }
    if let Some(a) = args::field(&o, "allow")? {
        if !args::is_array(&a) {
            return Err(Failure::Arg(format!("invalid apiKeys.allow {}: must be an array of keys", shown_type(&a))));
        }
        keys = keys.allow(&args::strings("apiKeys.allow", &a)?)?;
    }
    if let Some(s) = args::field(&o, "signingSecret")? {
        keys = keys.signed(&secret_bytes("apiKeys.signingSecret", &s)?)?;
    }
    if let Some(f) = args::field(&o, "verify")? {
        if args::type_of(&f) != ValueType::Function {
            return Err(Failure::Arg(format!("invalid apiKeys.verify {}: must be a function", args::describe(&f))));
        }
        keys = keys.app_callback();
    }
    Ok(keys)
}

/// Secrets are never echoed: only their type.
fn shown_type(v: &Unknown) -> String {
    match args::type_of(v) {
        ValueType::String => "(a string)".into(),
        _ => args::describe(v),
    }
}

fn build(env: &Env, options: &Unknown) -> Outcome<RuleSet> {
    let Some(obj) = args::options("rateLimit option", Some(options), HTTP_OPTIONS)? else {
        return Err(Failure::Arg(
            "missing options: rateLimit({ limits: '100/minute' }) needs `limits`, `limiter` or `rules`".into(),
        ));
    };
    let trusted = match args::field(&obj, "trustedProxies")? {
        Some(v) => args::strings("trustedProxies", &v)?,
        None => Vec::new(),
    };
    let prefix = match args::field(&obj, "ipv6Prefix")? {
        Some(v) => {
            let n = args::whole("ipv6Prefix", &v, 1)?;
            u8::try_from(n).map_err(|_| Failure::Arg(format!("invalid ipv6Prefix {n}: must be between 1 and 128")))?
        }
        None => DEFAULT_IPV6_PREFIX,
    };
    let header = match args::field(&obj, "forwardedHeader")? {
        Some(v) => ForwardedHeader::parse(&args::string("forwardedHeader", &v)?)?,
        None => ForwardedHeader::default(),
    };
    let trust_unix = match args::field(&obj, "trustUnixSocket")? {
        Some(v) => args::boolean("trustUnixSocket", &v)?,
        None => false,
    };
    let ip_rule = ClientIpRule::new(&trusted, prefix)?.with_forwarded_header(header).with_trust_unix_socket(trust_unix);
    // Express routes case-insensitively and ignores a trailing slash by default.
    let resolver = KeyResolver::new(ip_rule, jwt_for(&obj)?)
        .with_path_style(PathStyle::EXPRESS)
        .with_api_keys(api_keys_for(&obj)?);
    let style = match args::field(&obj, "headers")? {
        Some(v) => HeaderStyle::parse(&args::string("headers", &v)?)?,
        None => HeaderStyle::Draft10,
    };
    let name = match args::field(&obj, "name")? {
        Some(v) => args::string("name", &v)?,
        None => "default".to_string(),
    };
    let scope = scope_for(&obj)?;
    let mut rules = Vec::new();
    if let Some(limiter) = limiter_for(env, &obj, "rateLimit", &name)? {
        // Validate the name as rule names are validated: it goes into headers and keys.
        RouteRule::new(&name, "*", &[])?;
        rules.push(
            Rule::new(name.clone(), None, limiter, scope.clone(), cost_for(&obj)?)?.shadow(shadow_for(&obj, "shadow")?),
        );
    }
    if let Some(v) = args::field(&obj, "rules")? {
        let env_raw = v.value().env;
        if args::type_of(&v) != ValueType::Object {
            return Err(Failure::Arg(format!("invalid rules {}: must be an array of rules", args::describe(&v))));
        }
        let items = unsafe { Vec::<Unknown>::from_napi_value(env_raw, v.raw()) }
            .map_err(|_| Failure::Arg(format!("invalid rules {}: must be an array of rules", args::describe(&v))))?;
        for (i, item) in items.iter().enumerate() {
            let what = format!("rules[{i}]");
            let Some(r) = args::options(&format!("{what} option"), Some(item), RULE_OPTIONS)? else {
                return Err(Failure::Arg(format!("invalid {what} {}: must be an object", args::describe(item))));
            };
            let rname = match args::field(&r, "name")? {
                Some(v) => args::string(&format!("{what}.name"), &v)?,
                None => {
                    return Err(Failure::Arg(format!("{what}: missing `name` (it names the rule in headers and keys)")))
                }
            };
            let path = match args::field(&r, "path")? {
                Some(v) => args::string(&format!("{what}.path"), &v)?,
                None => "*".to_string(),
            };
            let methods = match args::field(&r, "methods")? {
                Some(v) => args::strings(&format!("{what}.methods"), &v)?,
                None => Vec::new(),
            };
            let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
            let route = RouteRule::new(&rname, &path, &methods)?;
            let Some(limiter) = limiter_for(env, &r, &what, &rname)? else {
                return Err(Failure::Arg(format!("{what} ({rname:?}): give it `limits` or a `limiter`")));
            };
            if rules.iter().any(|x: &Rule| x.name == rname) {
                return Err(Failure::Arg(format!("invalid {what}.name {rname:?}: two rules share it")));
            }
            let rscope = match args::field(&r, "key")? {
                Some(k) if args::type_of(&k) == ValueType::Function => {
                    return Err(Failure::Arg(format!(
                        "{what}.key: a key function is only taken at the top level; give the rule a key scope such as 'ip' or 'user+endpoint'"
                    )))
                }
                Some(_) => scope_for(&r)?,
                None => scope.clone(),
            };
            let shadow = shadow_for(&r, &format!("{what}.shadow"))?;
            rules.push(Rule::new(rname, Some(route), limiter, rscope, cost_for(&r)?)?.shadow(shadow));
        }
    }
    if rules.is_empty() {
        return Err(Failure::Arg("rateLimit: give `limits`, a shared `limiter`, or `rules`".into()));
    }
    Ok(RuleSet::new(resolver, rules, style)?)
}

/// What one request presents; every field but `peer` is client-controlled.
struct HttpRequest {
    method: String,
    /// The URL path (query allowed; it is ignored) that rules match against.
    path: String,
    /// The route template when the framework knows it ("/items/:id"), for `endpoint` keys.
    route: Option<String>,
    /// The socket peer's address, or "unix:" for a unix-domain socket.
    peer: String,
    /// Every value of the configured forwarding header, joined with ",".
    forwarded_for: Option<String>,
    authorization: Option<String>,
    api_key: Option<String>,
    /// The key from the app's key function, for rules whose key is a function.
    key: Option<String>,
    /// W3C trace context of the app's request span: each rule's `floodwall.check` span is its child.
    traceparent: Option<String>,
    /// The app's `apiKeys.verify` answer: true, false, or the identity it named.
    verdict: Option<OwnedVerdict>,
}

/// The app's `apiKeys.verify` answer as express.js passes it: true, false or an identity string.
fn verdict_from_js(v: Option<Unknown>) -> Outcome<Option<OwnedVerdict>> {
    let Some(v) = v.filter(|v| !args::is_nullish(v)) else { return Ok(None) };
    Ok(Some(match args::type_of(&v) {
        ValueType::Boolean => OwnedVerdict::from(args::boolean("apiKeyVerdict", &v)?),
        ValueType::String => OwnedVerdict::AcceptAs(args::string("apiKeyVerdict", &v)?),
        _ => {
            return Err(Failure::Arg(format!(
                "invalid apiKeyVerdict {}: must be true, false or an identity string",
                args::describe(&v)
            )))
        }
    }))
}

#[napi(js_name = "HttpLimiter")]
pub struct JsHttpLimiter {
    inner: Arc<RuleSet>,
}

#[napi]
impl JsHttpLimiter {
    #[napi(constructor, ts_args_type = "options: HttpLimiterOptions")]
    pub fn new(env: Env, options: Unknown) -> napi::Result<Self> {
        throw(&env, guard(|| Ok(JsHttpLimiter { inner: Arc::new(build(&env, &options)?) })))
    }

    /// Whether some rule's key comes from the app's key function.
    #[napi(getter)]
    pub fn needs_key(&self) -> bool {
        self.inner.rules().iter().any(|r| r.scope.is_none())
    }

    /// The header the client chain is read from, lower case: 'x-forwarded-for' or 'forwarded'.
    #[napi(getter)]
    pub fn forwarded_header(&self) -> &'static str {
        self.inner.resolver().ip_rule().forwarded_header().name()
    }

    /// Some rule's key has an 'endpoint' part, so `decide` wants the route template.
    #[napi(getter)]
    pub fn needs_route(&self) -> bool {
        self.inner.rules().iter().any(|r| r.scope.as_ref().is_some_and(|s| s.has_endpoint()))
    }

    #[napi(getter)]
    pub fn rule_names(&self) -> Vec<String> {
        self.inner.rules().iter().map(|r| r.name.clone()).collect()
    }

    /// Whether a request to this method and path needs the app's `apiKeys.verify` answer: some
    /// rule keyed by API key applies to it, and keys are verified by the app.
    #[napi]
    pub fn wants_api_key_verdict(&self, method: String, path: String) -> bool {
        self.inner.resolver().api_keys().verified_by_app()
            && self.inner.rules().iter().any(|r| {
                r.scope.as_ref().is_some_and(|s| s.parts().contains(&KeyPart::ApiKey)) && r.applies(&method, &path)
            })
    }

    /// Positional rather than an object: this runs once per HTTP request, and reading eight
    /// properties through napi costs more than eight arguments.
    #[napi(
        ts_args_type = "method: string, path: string, route: string | undefined | null, peer: string, forwardedFor?: string | null, authorization?: string | null, apiKey?: string | null, key?: string | null, traceparent?: string | null, apiKeyVerdict?: string | boolean | null",
        ts_return_type = "Promise<HttpDecision>"
    )]
    #[allow(clippy::too_many_arguments)]
    pub fn decide<'env>(
        &self,
        env: &'env Env,
        method: String,
        path: String,
        route: Option<String>,
        peer: String,
        forwarded_for: Option<String>,
        authorization: Option<String>,
        api_key: Option<String>,
        key: Option<String>,
        traceparent: Option<String>,
        api_key_verdict: Option<Unknown>,
    ) -> napi::Result<PromiseRaw<'env, HttpDecision>> {
        let inner = self.inner.clone();
        let traceparent = traceparent.filter(|t| !t.is_empty());
        let verdict = throw(env, guard(|| verdict_from_js(api_key_verdict)))?;
        let req =
            HttpRequest { method, path, route, peer, forwarded_for, authorization, api_key, key, traceparent, verdict };
        settle(env, async move { decide(&inner, &req).await })
    }
}

/// The core's rule engine decides; this only shapes its outcome for JavaScript.
async fn decide(set: &RuleSet, req: &HttpRequest) -> Outcome<HttpDecision> {
    let request = floodwall::web::HttpRequest {
        method: &req.method,
        path: &req.path,
        route: req.route.as_deref(),
        peer: &req.peer,
        forwarded_for: req.forwarded_for.as_deref(),
        authorization: req.authorization.as_deref(),
        api_key: req.api_key.as_deref(),
        api_key_verdict: req.verdict.as_ref().map(OwnedVerdict::as_verdict),
        traceparent: req.traceparent.as_deref(),
    };
    let o = set.decide(&request, |_| req.key.clone()).await?;
    let binding = o.binding();
    let mut headers = Vec::with_capacity(o.headers.len() * 2);
    for (name, value) in &o.headers {
        headers.push(name.to_string());
        headers.push(value.clone());
    }
    Ok(HttpDecision {
        matched: o.matched,
        allowed: o.allowed(),
        status: if o.allowed() { 200 } else { 429 },
        headers,
        body: nullable(o.body.clone()),
        key: nullable(o.key.clone()),
        forwarded_for_ignored: o.forwarded_for_ignored,
        user_verified: o.user_verified,
        api_key_rejected: o.api_key_rejected,
        limit: binding.map_or(0.0, |d| d.limit as f64),
        remaining: binding.map_or(0.0, |d| d.remaining as f64),
        reset_after: binding.map_or(0.0, |d| d.reset_after.as_secs_f64()),
        retry_after: nullable(binding.and_then(|d| d.retry_after.map(|r| r.as_secs_f64()))),
        limited_by: nullable(binding.and_then(|d| d.limited_by.map(|l| l.to_string()))),
        // The rules that applied: a rule keyed only by the other address family's network did not.
        rules: set
            .rules()
            .iter()
            .filter(|r| o.decided.iter().any(|d| d.rule == r.name) || o.store_errors.iter().any(|(n, _)| *n == r.name))
            .map(|r| r.name.clone())
            .collect(),
        shadow_denied: o.shadow_denied.clone(),
        fallback_rules: o.fallback_rules().map(String::from).collect(),
        store_errors: o
            .store_errors
            .iter()
            .map(|(rule, e)| StoreFailure {
                rule: rule.clone(),
                code: crate::error::STORE.to_string(),
                message: e.to_string(),
            })
            .collect(),
        key_errors: o
            .key_errors
            .iter()
            .map(|(rule, message)| KeyFailure { rule: rule.clone(), message: message.clone() })
            .collect(),
    })
}
