//! `HttpLimiter`: the engine behind `floodwall.fastapi`. One native call per request resolves the
//! key (client IP behind trusted proxies, verified JWT subject, API key, route), decides every
//! matching rule together and formats the headers and 429 body, all with `floodwall::web`, the
//! same code the Node adapter runs. The Python layer only reads the request and writes the response.

use std::collections::HashMap;
use std::sync::Arc;

use floodwall::secret::KeySecret;
use floodwall::web::{
    limited_body, rate_limit_headers, ApiKeyVerifier, ClientIpRule, ForwardedHeader, HeaderStyle, HttpRequest,
    JwtVerifier, KeyPart, KeyResolver, KeyScope, OwnedVerdict, PathStyle, RequestInfo, RouteRule, Rule, RuleOutcome,
    RuleSet, DEFAULT_IPV6_PREFIX,
};
use floodwall::Source;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::errors::{guard, to_py};
use crate::limiter::{config_error, Place, PyDecision, PyLimiter};

/// One rule: a limiter, the requests it applies to and how their key is made.
#[pyclass(name = "HttpRule", module = "floodwall._floodwall", frozen)]
pub struct PyHttpRule {
    name: String,
    /// None: every request.
    route: Option<RouteRule>,
    limiter: Py<PyLimiter>,
    /// None: the caller passes the key (the app's key function).
    scope: Option<KeyScope>,
    cost: u64,
    /// Decides and counts, but never denies and sends no headers (reported in `shadow_denied`).
    shadow: bool,
}

#[pymethods]
impl PyHttpRule {
    /// `path`: "/login", "/api/*", "/items/{id}", or None for every request. `methods`: None or
    /// ["*"] for all. `key`: a scope ("ip", "user", "api_key", "global", "endpoint", or joined with
    /// "+"), or None when the caller passes the key to `decide(keys=...)`. `shadow`: decide and
    /// count, but never deny nor send headers; would-be denials are reported in `shadow_denied`.
    #[new]
    #[pyo3(
        signature = (name, limiter, *, path = None, methods = None, key = Some("ip".to_owned()), cost = 1, shadow = false),
        text_signature = "(name, limiter, *, path=None, methods=None, key='ip', cost=1, shadow=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: String,
        limiter: Py<PyLimiter>,
        path: Option<String>,
        methods: Option<Vec<String>>,
        key: Option<String>,
        cost: u64,
        shadow: bool,
    ) -> PyResult<Self> {
        guard(|| {
            let methods: Vec<&str> = methods.iter().flatten().map(String::as_str).collect();
            // The name goes into header policy names and keys: validated like a route's name.
            let checked = RouteRule::new(&name, path.as_deref().unwrap_or("*"), &methods).map_err(to_py)?;
            let route = path.is_some().then_some(checked);
            let scope = key.as_deref().map(KeyScope::parse).transpose().map_err(to_py)?;
            // A cost the limiter could never grant is refused here, not on the first request.
            Rule::check_cost(&name, &limiter.bind(py).get().inner, cost).map_err(to_py)?;
            Ok(PyHttpRule { name, route, limiter, scope, cost, shadow })
        })
    }
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }
    #[getter]
    fn path(&self) -> Option<&str> {
        self.route.as_ref().map(|r| r.path.as_str())
    }
    #[getter]
    fn methods(&self) -> Vec<String> {
        self.route.as_ref().map(|r| r.methods.clone()).unwrap_or_default()
    }
    /// The key scope, or None when the caller supplies the key.
    #[getter]
    fn key(&self) -> Option<String> {
        self.scope.as_ref().map(|s| s.to_string())
    }
    #[getter]
    fn limiter(&self, py: Python<'_>) -> Py<PyLimiter> {
        self.limiter.clone_ref(py)
    }
    #[getter]
    fn cost(&self) -> u64 {
        self.cost
    }
    #[getter]
    fn shadow(&self) -> bool {
        self.shadow
    }
    fn __repr__(&self) -> String {
        format!(
            "HttpRule({:?}, path={:?}, methods={:?}, key={:?}, cost={}, shadow={})",
            self.name,
            self.path(),
            self.methods(),
            self.key(),
            self.cost,
            py_bool(self.shadow)
        )
    }
}

struct Inner {
    set: RuleSet,
    /// Where a request's future is first polled: in place when every rule decides in process
    /// or through a cache layer (most requests then finish on that poll), else on the runtime.
    place: Place,
}

/// One rule's decision about one request.
#[pyclass(name = "RuleDecision", module = "floodwall._floodwall", frozen)]
pub struct PyRuleDecision {
    #[pyo3(get)]
    rule: String,
    #[pyo3(get)]
    key: String,
    /// The limiter's answer; for a shadow rule, what would have happened.
    #[pyo3(get)]
    decision: Py<PyDecision>,
    /// A shadow rule: its decision was not enforced.
    #[pyo3(get)]
    shadow: bool,
}

#[pymethods]
impl PyRuleDecision {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "RuleDecision(rule={:?}, key={:?}, decision={}, shadow={})",
            self.rule,
            self.key,
            self.decision.bind(py).repr()?,
            py_bool(self.shadow)
        ))
    }
}

/// What to do with one request: the status, headers and body, and why.
#[pyclass(name = "HttpDecision", module = "floodwall._floodwall", frozen)]
pub struct PyHttpDecision {
    /// Some rule applied to this request.
    #[pyo3(get)]
    matched: bool,
    /// Every rule that could decide allowed it.
    #[pyo3(get)]
    allowed: bool,
    /// 200, or 429 when denied.
    #[pyo3(get)]
    status: u16,
    /// Response headers: RateLimit-Policy / RateLimit and/or X-RateLimit-*, Retry-After when denied.
    #[pyo3(get)]
    headers: Vec<(String, String)>,
    /// The JSON body of a 429, else None.
    #[pyo3(get)]
    body: Option<String>,
    /// The key of the first matching rule, e.g. "ip:203.0.113.7".
    #[pyo3(get)]
    key: Option<String>,
    /// X-Forwarded-For came from a peer that is not a trusted proxy, and was ignored.
    #[pyo3(get)]
    forwarded_for_ignored: bool,
    /// A `user` key part came from a verified JWT.
    #[pyo3(get)]
    user_verified: bool,
    /// An API key was sent and did not verify (a failed lookup): the request was keyed by IP.
    #[pyo3(get)]
    api_key_rejected: bool,
    /// Some decision came from the fallback policy because Redis could not answer.
    #[pyo3(get)]
    fallback: bool,
    #[pyo3(get)]
    decisions: Vec<Py<PyRuleDecision>>,
    /// Shadow rules that would have denied this request (it was not denied for them), in order.
    #[pyo3(get)]
    shadow_denied: Vec<String>,
    /// (rule, message) for each rule whose store failed with fallback="error"; those rules allowed
    /// the request.
    #[pyo3(get)]
    store_errors: Vec<(String, String)>,
    /// (rule, what was wrong) for each rule whose app key was missing (None), empty or too long;
    /// those rules keyed the request by its client IP. The key itself is never in the message.
    #[pyo3(get)]
    key_errors: Vec<(String, String)>,
}

#[pymethods]
impl PyHttpDecision {
    fn __repr__(&self) -> String {
        format!(
            "HttpDecision(matched={}, allowed={}, status={}, key={:?}, headers={:?}, shadow_denied={:?}, store_errors={:?})",
            py_bool(self.matched),
            py_bool(self.allowed),
            self.status,
            self.key,
            self.headers,
            self.shadow_denied,
            self.store_errors
        )
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// The core's outcome, made into Python objects with the interpreter attached.
struct Outcome(RuleOutcome);

impl<'py> IntoPyObject<'py> for Outcome {
    type Target = PyHttpDecision;
    type Output = Bound<'py, PyHttpDecision>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        let o = self.0;
        let fallback = o.fallback_rules().next().is_some();
        let allowed = o.allowed();
        let decisions = o
            .decided
            .into_iter()
            .map(|d| {
                let decision = Py::new(py, PyDecision::from(d.decision))?;
                Py::new(py, PyRuleDecision { rule: d.rule, key: d.key, decision, shadow: d.shadow })
            })
            .collect::<PyResult<Vec<_>>>()?;
        Bound::new(
            py,
            PyHttpDecision {
                matched: o.matched,
                allowed,
                status: if allowed { 200 } else { 429 },
                headers: o.headers.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
                body: o.body,
                key: o.key,
                forwarded_for_ignored: o.forwarded_for_ignored,
                user_verified: o.user_verified,
                api_key_rejected: o.api_key_rejected,
                fallback,
                decisions,
                shadow_denied: o.shadow_denied,
                store_errors: o.store_errors.into_iter().map(|(rule, e)| (rule, e.to_string())).collect(),
                key_errors: o.key_errors,
            },
        )
    }
}

/// What one request presents; every field but `peer` is client-controlled.
struct Request {
    method: String,
    path: String,
    route: Option<String>,
    peer: String,
    forwarded_for: Option<String>,
    authorization: Option<String>,
    api_key: Option<String>,
    keys: HashMap<String, String>,
    /// The app's W3C trace context: each rule's `floodwall.check` span becomes its child.
    traceparent: Option<String>,
    /// The app's `verify` callback's answer about `api_key`.
    verdict: Option<OwnedVerdict>,
}

/// `api_key_verdict` as the Python layer passes it: True, False, or the identity the callback named.
fn verdict_from_py(v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<OwnedVerdict>> {
    let Some(v) = v.filter(|v| !v.is_none()) else { return Ok(None) };
    if let Ok(b) = v.cast::<pyo3::types::PyBool>() {
        return Ok(Some(OwnedVerdict::from(b.is_true())));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Some(OwnedVerdict::AcceptAs(s.to_str()?.to_owned())));
    }
    Err(config_error("api_key_verdict", type_name(v), "must be True, False or an identity string"))
}

/// The core's rule engine decides; this only carries the request across.
async fn decide(inner: &Inner, req: &Request) -> floodwall::Result<Outcome> {
    let request = HttpRequest {
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
    inner.set.decide(&request, |rule| req.keys.get(rule).cloned()).await.map(Outcome)
}

fn jwt_arg(d: &Bound<'_, PyDict>) -> PyResult<JwtVerifier> {
    let mut secret: Option<Vec<u8>> = None;
    let mut public_key: Option<String> = None;
    let mut algorithm: Option<String> = None;
    let mut issuer: Option<String> = None;
    let mut audience: Option<String> = None;
    let mut leeway: Option<u64> = None;
    let mut require_exp = false;
    for (k, v) in d.iter() {
        let key: String = k.extract()?;
        let text = |what: &'static str| {
            v.extract::<String>().map_err(|_| config_error(what, type_name(&v), "must be a string"))
        };
        match key.as_str() {
            "secret" => {
                // The secret itself never goes into an error message.
                secret = Some(if let Ok(b) = v.cast::<PyBytes>() {
                    b.as_bytes().to_vec()
                } else if let Ok(s) = v.cast::<PyString>() {
                    s.to_str()?.as_bytes().to_vec()
                } else {
                    return Err(config_error("jwt secret", type_name(&v), "must be str or bytes"));
                })
            }
            "public_key" => public_key = Some(text("jwt public_key")?),
            "algorithm" => algorithm = Some(text("jwt algorithm")?),
            "issuer" => issuer = Some(text("jwt issuer")?),
            "audience" => audience = Some(text("jwt audience")?),
            "leeway" | "leeway_secs" => {
                leeway =
                    Some(v.extract().map_err(|_| config_error("jwt leeway", type_name(&v), "must be whole seconds"))?)
            }
            "require_exp" => {
                require_exp =
                    v.extract().map_err(|_| config_error("jwt require_exp", type_name(&v), "must be a bool"))?
            }
            _ => {
                return Err(config_error(
                    "jwt option",
                    &key,
                    "unknown; expected secret, public_key, algorithm, issuer, audience, leeway or require_exp",
                ))
            }
        }
    }
    let alg = algorithm.as_deref().map(str::to_ascii_uppercase);
    let mut verifier = match (secret, public_key) {
        (Some(_), Some(_)) => {
            return Err(config_error(
                "jwt",
                "secret and public_key",
                "give secret (HS256) or public_key (RS256/ES256), not both",
            ))
        }
        (None, None) => {
            return Err(config_error("jwt", "{}", "give secret (HS256) or public_key with algorithm RS256 or ES256"))
        }
        (Some(s), None) => match alg.as_deref() {
            None | Some("HS256") => JwtVerifier::hs256(&s).map_err(to_py)?,
            Some(a) => {
                return Err(config_error("jwt algorithm", a, "a secret means HS256; use public_key for RS256/ES256"))
            }
        },
        (None, Some(pem)) => match alg.as_deref() {
            None | Some("RS256") => JwtVerifier::rs256_pem(&pem).map_err(to_py)?,
            Some("ES256") => JwtVerifier::es256_pem(&pem).map_err(to_py)?,
            Some(a) => return Err(config_error("jwt algorithm", a, "expected RS256 or ES256 with a public_key")),
        },
    };
    if let Some(i) = issuer {
        verifier = verifier.with_issuer(&i);
    }
    if let Some(a) = audience {
        verifier = verifier.with_audience(&a);
    }
    if let Some(l) = leeway {
        verifier = verifier.with_leeway_secs(l);
    }
    Ok(verifier.with_required_exp(require_exp))
}

/// str or bytes; the value itself never goes into an error message.
fn secret_bytes(what: &'static str, v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        Ok(b.as_bytes().to_vec())
    } else if let Ok(s) = v.cast::<PyString>() {
        Ok(s.to_str()?.as_bytes().to_vec())
    } else {
        Err(config_error(what, type_name(v), "must be str or bytes"))
    }
}

/// `api_keys`: {"allow": [...], "signing_secret": ..., "verify": callable, "key_secret": ...}. The
/// callable stays in Python (fastapi.py calls it and passes its answer); here it only says that
/// keys are verified that way.
fn api_keys_arg(d: &Bound<'_, PyDict>) -> PyResult<ApiKeyVerifier> {
    let mut allow: Option<Vec<String>> = None;
    let mut signing: Option<Vec<u8>> = None;
    let mut callback = false;
    let mut key_secret: Option<Vec<u8>> = None;
    for (k, v) in d.iter() {
        let key: String = k.extract()?;
        match key.as_str() {
            "allow" => {
                if v.is_instance_of::<PyString>() || v.is_instance_of::<PyBytes>() {
                    return Err(config_error(
                        "api_keys allow",
                        type_name(&v),
                        "must be a list of keys, not one string",
                    ));
                }
                allow = Some(
                    v.extract()
                        .map_err(|_| config_error("api_keys allow", type_name(&v), "must be a list of strings"))?,
                )
            }
            "signing_secret" => signing = Some(secret_bytes("api_keys signing_secret", &v)?),
            "key_secret" => key_secret = Some(secret_bytes("api_keys key_secret", &v)?),
            "verify" => {
                if !v.is_callable() {
                    return Err(config_error("api_keys verify", type_name(&v), "must be a callable"));
                }
                callback = true;
            }
            _ => {
                return Err(config_error(
                    "api_keys option",
                    &key,
                    "unknown; expected allow, signing_secret, verify or key_secret",
                ))
            }
        }
    }
    let mut keys = ApiKeyVerifier::new();
    // The explicit secret, else FLOODWALL_KEY_SECRET (an error if set but too short), else one made
    // for this process (refused by RuleSet::new when the buckets live in Redis).
    let secret = match key_secret {
        Some(s) => Some(KeySecret::new("api_keys key_secret", &s).map_err(to_py)?),
        None => KeySecret::from_env().map_err(to_py)?,
    };
    if let Some(s) = secret {
        keys = keys.key_secret(s);
    }
    if let Some(a) = allow {
        keys = keys.allow(&a).map_err(to_py)?;
    }
    if let Some(s) = signing {
        keys = keys.signed(&s).map_err(to_py)?;
    }
    if callback {
        keys = keys.app_callback();
    }
    Ok(keys)
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type().name().map(|n| format!("({n})")).unwrap_or_default()
}

/// Rules decided together for each request, with the client-IP, JWT and header settings.
#[pyclass(name = "HttpLimiter", module = "floodwall._floodwall", frozen)]
pub struct PyHttpLimiter {
    inner: Arc<Inner>,
    rules: Vec<Py<PyHttpRule>>,
}

#[pymethods]
impl PyHttpLimiter {
    /// `trusted_proxies`: addresses or CIDR blocks whose forwarding header is believed.
    /// `forwarded_header`: which header they write, "x-forwarded-for" (default) or "forwarded"
    /// (RFC 7239). `trust_unix_socket`: a unix-socket peer (`peer="unix:"`) is a trusted proxy.
    /// `jwt`: {"secret": ...} (HS256) or {"public_key": pem, "algorithm": "RS256"|"ES256"}, plus
    /// optional "issuer", "audience", "leeway". `headers`: "draft-10", "legacy", "both" or "none".
    #[new]
    /// `api_keys`: how API keys are verified, {"allow": [...], "signing_secret": ..., "verify":
    /// callable, "key_secret": ...}; a rule keyed by `api_key` needs one of the first three.
    #[pyo3(signature = (
        rules, *, trusted_proxies = None, ipv6_prefix = None, jwt = None, headers = "draft-10",
        forwarded_header = "x-forwarded-for", trust_unix_socket = false, api_keys = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        rules: Vec<Py<PyHttpRule>>,
        trusted_proxies: Option<Vec<String>>,
        ipv6_prefix: Option<u8>,
        jwt: Option<&Bound<'_, PyDict>>,
        headers: &str,
        forwarded_header: &str,
        trust_unix_socket: bool,
        api_keys: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        guard(|| {
            if rules.is_empty() {
                return Err(config_error("rules", "[]", "give at least one rule"));
            }
            let ip_rule =
                ClientIpRule::new(&trusted_proxies.unwrap_or_default(), ipv6_prefix.unwrap_or(DEFAULT_IPV6_PREFIX))
                    .map_err(to_py)?
                    .with_forwarded_header(ForwardedHeader::parse(forwarded_header).map_err(to_py)?)
                    .with_trust_unix_socket(trust_unix_socket);
            let verifier = jwt.map(jwt_arg).transpose()?;
            let api_keys = api_keys.map(api_keys_arg).transpose()?.unwrap_or_default();
            let style = HeaderStyle::parse(headers).map_err(to_py)?;
            let mut built: Vec<Rule> = Vec::with_capacity(rules.len());
            for r in &rules {
                let r = r.get();
                if built.iter().any(|b| b.name == r.name) {
                    return Err(config_error("rule name", &r.name, "two rules share it"));
                }
                built.push(
                    Rule::new(
                        r.name.clone(),
                        r.route.clone(),
                        r.limiter.bind(py).get().inner.clone(),
                        r.scope.clone(),
                        r.cost,
                    )
                    .map_err(to_py)?
                    .shadow(r.shadow),
                );
            }
            let place = if built.iter().all(|r| r.limiter.store_kind() == Source::Memory) {
                Place::InProcess
            } else if built
                .iter()
                .all(|r| r.limiter.store_kind() == Source::Memory || r.limiter.cache_stats().is_some())
            {
                Place::Cached
            } else {
                Place::Runtime
            };
            // FastAPI routes as Starlette does (case-sensitive), for paths no route template names.
            let resolver =
                KeyResolver::new(ip_rule, verifier).with_path_style(PathStyle::STARLETTE).with_api_keys(api_keys);
            let inner = Inner { set: RuleSet::new(resolver, built, style).map_err(to_py)?, place };
            Ok(PyHttpLimiter { inner: Arc::new(inner), rules })
        })
    }

    #[getter]
    fn rules(&self, py: Python<'_>) -> Vec<Py<PyHttpRule>> {
        self.rules.iter().map(|r| r.clone_ref(py)).collect()
    }

    /// The header the client chain is read from, lower case: "x-forwarded-for" or "forwarded".
    #[getter]
    fn forwarded_header(&self) -> &'static str {
        self.inner.set.resolver().ip_rule().forwarded_header().name()
    }

    /// Some rule's key has an "endpoint" part, so `decide` wants the route template.
    #[getter]
    fn needs_route(&self) -> bool {
        self.inner.set.rules().iter().any(|r| r.scope.as_ref().is_some_and(|s| s.has_endpoint()))
    }

    /// Names of the rules keyed by API key (the adapter runs its `verify` callback for them).
    #[getter]
    fn api_key_rules(&self) -> Vec<String> {
        let uses = |r: &&Rule| r.scope.as_ref().is_some_and(|s| s.parts().contains(&KeyPart::ApiKey));
        self.inner.set.rules().iter().filter(uses).map(|r| r.name.clone()).collect()
    }

    /// Names of the rules whose key the caller supplies (`key=None`).
    #[getter]
    fn custom_key_rules(&self) -> Vec<String> {
        self.inner.set.rules().iter().filter(|r| r.scope.is_none()).map(|r| r.name.clone()).collect()
    }

    /// Whether some rule applies to this method and path (nothing is counted).
    fn matches(&self, method: &str, path: &str) -> bool {
        self.inner.set.rules().iter().any(|r| r.applies(method, path))
    }

    /// Names of the rules that apply to this method and path, in order (nothing is counted).
    fn matching(&self, method: &str, path: &str) -> Vec<String> {
        self.inner.set.rules().iter().filter(|r| r.applies(method, path)).map(|r| r.name.clone()).collect()
    }

    /// Decide a request against every matching rule at once. `peer` is the socket peer's address,
    /// or "unix:" for a unix-domain socket. `route` is the route template when known
    /// ("/items/{id}"), for "endpoint" keys; `forwarded_for` every value of the configured
    /// `forwarded_header`, joined with ","; `keys` maps rule names to app-made keys;
    /// `api_key_verdict` is the app's `verify` callback's answer (True, False or an identity).
    #[pyo3(signature = (method, path, peer, *, route = None, forwarded_for = None, authorization = None, api_key = None, keys = None, traceparent = None, api_key_verdict = None))]
    #[allow(clippy::too_many_arguments)]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        method: String,
        path: String,
        peer: String,
        route: Option<String>,
        forwarded_for: Option<String>,
        authorization: Option<String>,
        api_key: Option<String>,
        keys: Option<HashMap<String, String>>,
        traceparent: Option<String>,
        api_key_verdict: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys = keys.unwrap_or_default();
        let verdict = verdict_from_py(api_key_verdict.as_ref())?;
        let req =
            Request { method, path, route, peer, forwarded_for, authorization, api_key, keys, traceparent, verdict };
        let inner = self.inner.clone();
        crate::limiter::awaitable(py, self.inner.place, async move { decide(&inner, &req).await })
    }

    /// As `decide`, waiting without holding the interpreter.
    #[pyo3(signature = (method, path, peer, *, route = None, forwarded_for = None, authorization = None, api_key = None, keys = None, traceparent = None, api_key_verdict = None))]
    #[allow(clippy::too_many_arguments)]
    fn decide_sync<'py>(
        &self,
        py: Python<'py>,
        method: String,
        path: String,
        peer: String,
        route: Option<String>,
        forwarded_for: Option<String>,
        authorization: Option<String>,
        api_key: Option<String>,
        keys: Option<HashMap<String, String>>,
        traceparent: Option<String>,
        api_key_verdict: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyHttpDecision>> {
        let keys = keys.unwrap_or_default();
        let verdict = verdict_from_py(api_key_verdict.as_ref())?;
        let req =
            Request { method, path, route, peer, forwarded_for, authorization, api_key, keys, traceparent, verdict };
        let out = crate::limiter::blocking(py, self.inner.place == Place::InProcess, decide(&self.inner, &req))?;
        out.into_pyobject(py)
    }

    /// The client as the `ip` key part sees it: (key, forwarded_for_ignored), e.g. ("ip:1.2.3.4", False).
    #[pyo3(signature = (peer, forwarded_for = None))]
    fn client_ip(&self, peer: &str, forwarded_for: Option<&str>) -> (String, bool) {
        let c = self.inner.set.resolver().ip_rule().client_ip(peer, forwarded_for);
        (c.key, c.forwarded_for_ignored)
    }

    /// The verified JWT subject of an Authorization header value, or None.
    fn verified_user(&self, authorization: Option<&str>) -> Option<String> {
        let req = RequestInfo { authorization, ..Default::default() };
        self.inner.set.resolver().user(&req)
    }
}

/// The rate-limit headers for one decision (`style`: "draft-10", "legacy", "both" or "none").
#[pyfunction]
#[pyo3(name = "rate_limit_headers", signature = (decision, style = "draft-10"))]
pub fn py_rate_limit_headers(decision: &Bound<'_, PyDecision>, style: &str) -> PyResult<Vec<(String, String)>> {
    let style = HeaderStyle::parse(style).map_err(to_py)?;
    Ok(rate_limit_headers(&decision.get().inner, style).into_iter().map(|(n, v)| (n.to_string(), v)).collect())
}

/// The JSON body of a 429 for a decision: {"error":"rate_limited","limit":...,"retry_after":...}.
#[pyfunction]
#[pyo3(name = "limited_body")]
pub fn py_limited_body(decision: &Bound<'_, PyDecision>) -> String {
    limited_body(&decision.get().inner)
}
