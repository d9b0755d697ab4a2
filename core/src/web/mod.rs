//! HTTP rules shared by every adapter (FastAPI, Express): client IP behind trusted proxies, key
//! scopes, verified JWT subjects, route rules and the rate-limit response headers and body.
//! They live here once so that both languages turn the same request into the same key and header.

mod api_key;
mod client_ip;
pub(crate) mod headers;
mod jwt;
mod request_key;
mod route;
mod rules;

pub use api_key::{sign_api_key, ApiKeyIdentity, ApiKeyVerifier, AppVerdict, OwnedVerdict, MAX_API_KEY_LEN};
pub use client_ip::{ClientIp, ClientIpRule, ForwardedHeader, IpFamily, DEFAULT_IPV6_PREFIX, UNIX_PEER};
pub use headers::{limited_body, merged_headers, merged_limited_body, rate_limit_headers, HeaderStyle};
pub use jwt::{bearer_token, JwtVerifier, DEFAULT_JWT_CACHE_ENTRIES, MAX_LEEWAY_SECS, MAX_TOKEN_LEN};
pub use request_key::{KeyPart, KeyResolver, KeyScope, RequestInfo, Resolved, MAX_RAW_PART};
pub use route::{PathStyle, RouteRule};
pub use rules::{rule_identity, HttpRequest, Rule, RuleDecision, RuleOutcome, RuleSet};

#[cfg(test)]
mod test_keys;

#[cfg(test)]
mod tests {
    //! Everything a client sends is arbitrary bytes: none of it may panic, whatever the shape.

    use proptest::prelude::*;

    use super::*;

    fn resolver() -> KeyResolver {
        KeyResolver::new(
            ClientIpRule::new(&["10.0.0.0/8", "::1", "fd00::/8"], 56).unwrap(),
            Some(JwtVerifier::hs256(&[b's'; 32]).unwrap().with_issuer("i").with_audience("a")),
        )
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            peer in ".{0,60}",
            xff in proptest::option::of(".{0,200}"),
            auth in proptest::option::of(".{0,300}"),
            api_key in proptest::option::of(".{0,50}"),
            method in ".{0,10}",
            route in ".{0,300}",
        ) {
            let r = resolver();
            let req = RequestInfo {
                peer: &peer, forwarded_for: xff.as_deref(), authorization: auth.as_deref(),
                api_key: api_key.as_deref(), method: &method, route: &route, ..Default::default()
            };
            let got = r.resolve(&KeyScope::parse("user+api_key+endpoint+ip+global").unwrap(), &req);
            prop_assert!(!got.key.is_empty());
            prop_assert!(!got.user_verified);
            for pattern in ["*", "/", "/api/*", "/items/{id}/x", "/:a/:b"] {
                let _ = RouteRule::new("r", pattern, &["GET"]).unwrap().matches(&method, &route);
            }
            let _ = bearer_token(auth.as_deref());
        }

        #[test]
        fn address_shaped_input_never_panics(
            peer in "[0-9a-fA-F:.\\[\\]%]{0,60}",
            xff in "[0-9a-fA-F:.\\[\\]%, ]{0,120}",
        ) {
            let got = resolver().ip_rule().client_ip(&peer, Some(&xff));
            prop_assert!(got.key.starts_with("ip:"));
            prop_assert_eq!(got.ip.is_none(), got.key == "ip:unknown");
        }

        #[test]
        fn forwarded_shaped_input_never_panics(
            peer in "(unix:)?[0-9a-fA-F:.\\[\\]]{0,30}",
            fwd in "[0-9a-fA-F:.\\[\\]%,;=\" _forFOR\\\\]{0,160}",
            trust_unix in any::<bool>(),
        ) {
            let rule = ClientIpRule::new(&["10.0.0.0/8", "::1"], 64).unwrap()
                .with_forwarded_header(ForwardedHeader::Forwarded)
                .with_trust_unix_socket(trust_unix);
            let got = rule.client_ip(&peer, Some(&fwd));
            prop_assert_eq!(got.ip.is_none(), got.key == "ip:unknown");
            for style in [PathStyle::EXPRESS, PathStyle::STARLETTE] {
                prop_assert!(style.normalise(&fwd).starts_with('/'));
            }
        }

        #[test]
        fn token_shaped_input_never_verifies(
            token in "[A-Za-z0-9_=-]{0,80}\\.[A-Za-z0-9_=-]{0,200}\\.[A-Za-z0-9_=-]{0,100}",
        ) {
            prop_assert_eq!(resolver().jwt().unwrap().verify_subject(&token), None);
        }
    }
}
