//! Who may call the server: users with passwords (Flight SQL handshake, HTTP Basic), static API
//! tokens, and the session tokens a handshake hands out. [`AuthLayer`] checks every RPC before it
//! reaches a service, so no method can forget to; services only read the [`Principal`] it leaves
//! in the request's extensions to decide what the caller's role allows.
//!
//! Secrets never sit in memory or config in the clear: passwords as Argon2id PHC strings, API
//! tokens as SHA-256 digests (they are random and long, so a fast hash suffices), session tokens
//! as SHA-256 digests. Comparisons are constant-time, and a failure says only "unauthenticated".

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use cohort_engine::Access;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::codegen::http;

use crate::login_throttle::{LoginThrottle, ThrottleConfig};

/// Requests to these services need no credentials: load balancers probe health anonymously.
const OPEN_PATHS: &[&str] = &["/grpc.health.v1.Health/"];

/// Basic credentials as base64 with or without padding: the Go Flight client (under ADBC's
/// driver) leaves the padding off.
const BASIC_CREDENTIALS: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Prefix of API tokens this server generates, so leaked ones are recognisable in scanners.
const TOKEN_PREFIX: &str = "cohort_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries, metadata and segment consumption.
    Reader,
    /// Also ingest, INSERT, and defining, changing and refreshing tags and segments.
    Admin,
}

impl Role {
    /// The name used in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }

    pub fn access(self) -> Access {
        match self {
            Role::Reader => Access::ReadOnly,
            Role::Admin => Access::ReadWrite,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Role::Reader, Role::Admin]
            .into_iter()
            .find(|role| role.name() == s)
            .ok_or_else(|| format!("unknown role '{s}': use reader or admin"))
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// Who the caller is when the server runs without authentication (loopback or --insecure).
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            role: Role::Admin,
        }
    }

    /// The principal the auth layer attached to a request; absent means the layer did not run,
    /// which must fail closed.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Principal, Status> {
        request
            .extensions()
            .get::<Principal>()
            .ok_or_else(|| Status::unauthenticated("unauthenticated"))
    }

    pub fn require_admin(&self) -> Result<(), Status> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Reader => Err(Status::permission_denied(
                "permission denied: this call needs the admin role",
            )),
        }
    }
}

/// `[[auth.users]]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Argon2id PHC string from `cohort auth hash-password`.
    pub password_hash: String,
    pub role: Role,
}

/// `[[auth.tokens]]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// `sha256:<hex>` from `cohort auth new-token`.
    pub token_hash: String,
    pub role: Role,
}

/// `[auth]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// How long a handshake's session token stays valid, e.g. "12h". [default: 12h]
    pub session_ttl: Option<String>,
}

impl AuthConfig {
    pub fn is_enabled(&self) -> bool {
        !self.users.is_empty() || !self.tokens.is_empty()
    }
}

struct User {
    name: String,
    password_hash: String,
    role: Role,
}

struct ApiToken {
    name: String,
    digest: [u8; 32],
    role: Role,
}

/// Session tokens one principal may hold at once; a handshake past this replaces the oldest.
const MAX_SESSIONS_PER_PRINCIPAL: usize = 1000;

pub struct Authenticator {
    enabled: bool,
    users: Vec<User>,
    tokens: Vec<ApiToken>,
    sessions: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    throttle: LoginThrottle,
    session_ttl: Duration,
    /// Verified when the user name is unknown, so timing does not tell which names exist.
    decoy_hash: String,
}

impl Authenticator {
    /// Checks the configuration (hash formats, duplicate names) so mistakes stop start-up.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let mut users = Vec::new();
        for user in &config.users {
            PasswordHash::new(&user.password_hash).map_err(|e| {
                format!(
                    "auth user '{}': password_hash is not a PHC string ({e}); create one with `cohort auth hash-password`",
                    user.name
                )
            })?;
            if users.iter().any(|u: &User| u.name == user.name) {
                return Err(format!("auth user '{}' is listed twice", user.name));
            }
            users.push(User {
                name: user.name.clone(),
                password_hash: user.password_hash.clone(),
                role: user.role,
            });
        }
        let mut tokens = Vec::new();
        for token in &config.tokens {
            let digest = parse_token_hash(&token.token_hash).map_err(|e| {
                format!(
                    "auth token '{}': {e}; create one with `cohort auth new-token`",
                    token.name
                )
            })?;
            tokens.push(ApiToken {
                name: token.name.clone(),
                digest,
                role: token.role,
            });
        }
        let session_ttl = match &config.session_ttl {
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| format!("auth.session_ttl '{text}': {e}"))?,
            None => Duration::from_secs(12 * 3600),
        };
        Ok(Self {
            enabled: config.is_enabled(),
            users,
            tokens,
            sessions: Mutex::new(HashMap::new()),
            throttle: LoginThrottle::new(ThrottleConfig::default()),
            session_ttl,
            decoy_hash: hash_password("decoy password for unknown users")?,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Who sent `headers` (from `peer`), or UNAUTHENTICATED without saying what was wrong;
    /// RESOURCE_EXHAUSTED while the peer or the server has had too many failed logins.
    pub async fn authenticate(
        self: &Arc<Self>,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Principal, Status> {
        if !self.enabled {
            return Ok(Principal::anonymous());
        }
        let denied = || Status::unauthenticated("unauthenticated");
        let value = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(denied)?;
        let (scheme, credentials) = value.split_once(' ').ok_or_else(denied)?;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer(credentials).ok_or_else(denied)
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = BASIC_CREDENTIALS
                .decode(credentials)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(denied)?;
            let (user, password) = decoded.split_once(':').ok_or_else(denied)?;
            self.verify_password(user, password, peer)
                .await?
                .ok_or_else(denied)
        } else {
            Err(denied())
        }
    }

    /// Who logs in with `user` and `password` (the PostgreSQL endpoint's login): an API token
    /// given as the password, whatever the user name, or a configured user's password. `None`
    /// when neither matches; RESOURCE_EXHAUSTED while the peer or the server has had too many
    /// failed logins.
    pub async fn login(
        self: &Arc<Self>,
        user: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Option<Principal>, Status> {
        if !self.enabled {
            return Ok(Some(Principal::anonymous()));
        }
        if let Some(principal) = self.api_token(password) {
            return Ok(Some(principal));
        }
        self.verify_password(user, password, peer).await
    }

    /// Checks a user's password under the login throttle (Argon2 is slow by design).
    async fn verify_password(
        self: &Arc<Self>,
        user: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Option<Principal>, Status> {
        let (user, password) = (user.to_string(), password.to_string());
        let this = Arc::clone(self);
        let found = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&found);
        let verified = self
            .throttle
            .check(peer, move || {
                let principal = this.password(&user, &password);
                let ok = principal.is_some();
                *slot.lock().expect("lock poisoned") = principal;
                ok
            })
            .await?;
        let principal = found.lock().expect("lock poisoned").take();
        Ok(principal.filter(|_| verified))
    }

    fn password(&self, name: &str, password: &str) -> Option<Principal> {
        let user = self.users.iter().find(|u| u.name == name);
        let stored = user.map_or(self.decoy_hash.as_str(), |u| u.password_hash.as_str());
        let hash = PasswordHash::new(stored).ok()?;
        let verified = Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok();
        let user = user.filter(|_| verified)?;
        Some(Principal {
            name: user.name.clone(),
            role: user.role,
        })
    }

    /// The holder of API token `token`.
    fn api_token(&self, token: &str) -> Option<Principal> {
        self.api_token_with_digest(&Sha256::digest(token.as_bytes()).into())
    }

    /// The holder of the API token whose SHA-256 is `digest`. Every configured token is
    /// compared, matching or not, in constant time.
    fn api_token_with_digest(&self, digest: &[u8; 32]) -> Option<Principal> {
        let mut found: Option<&ApiToken> = None;
        for candidate in &self.tokens {
            if bool::from(candidate.digest.ct_eq(digest)) {
                found = Some(candidate);
            }
        }
        found.map(|token| Principal {
            name: token.name.clone(),
            role: token.role,
        })
    }

    fn bearer(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = self.api_token_with_digest(&digest) {
            return Some(principal);
        }
        // A lookup, not a scan: expired sessions are dropped at handshakes.
        let sessions = self.sessions.lock().expect("lock poisoned");
        sessions
            .get(&digest)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(principal, _)| principal.clone())
    }

    /// A new session token for `principal`, valid for the configured time. Without
    /// authentication nobody checks it, so it is not kept. Expired sessions are dropped here,
    /// at the rare handshake, rather than on every request.
    pub fn issue_session(&self, principal: &Principal) -> String {
        let token = new_secret("session_");
        if !self.enabled {
            return token;
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("lock poisoned");
        sessions.retain(|_, (_, expires)| *expires > now);
        let mut held: Vec<([u8; 32], Instant)> = sessions
            .iter()
            .filter(|(_, (owner, _))| owner == principal)
            .map(|(digest, (_, expires))| (*digest, *expires))
            .collect();
        if held.len() >= MAX_SESSIONS_PER_PRINCIPAL {
            held.sort_by_key(|(_, expires)| *expires);
            for (oldest, _) in &held[..=held.len() - MAX_SESSIONS_PER_PRINCIPAL] {
                sessions.remove(oldest);
            }
        }
        sessions.insert(digest, (principal.clone(), now + self.session_ttl));
        token
    }
}

/// An Argon2id PHC string for `password`, for `[[auth.users]]`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A new API token and the `sha256:<hex>` digest to put in `[[auth.tokens]]`.
pub fn new_api_token() -> (String, String) {
    let token = new_secret(TOKEN_PREFIX);
    let digest = Sha256::digest(token.as_bytes());
    (token, format!("sha256:{}", hex(&digest)))
}

fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_token_hash(text: &str) -> Result<[u8; 32], String> {
    let hex_digits = text
        .strip_prefix("sha256:")
        .ok_or("token_hash must start with 'sha256:'")?;
    if hex_digits.len() != 64 || !hex_digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("token_hash must be 'sha256:' and 64 hex digits".into());
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex_digits[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(digest)
}

/// The client's address, as tonic records it for plain and TLS connections.
fn peer_address(extensions: &http::Extensions) -> Option<IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|tls| tls.get_ref().remote_addr())
        })
        .map(|address| address.ip())
}

/// Authenticates every request before routing; see the module documentation.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: Arc::clone(&self.authenticator),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that must serve this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = Arc::clone(&self.authenticator);
        Box::pin(async move {
            let path = request.uri().path();
            if OPEN_PATHS.iter().any(|open| path.starts_with(open)) {
                return inner.call(request).await;
            }
            let peer = peer_address(request.extensions());
            match authenticator.authenticate(request.headers(), peer).await {
                Ok(principal) => {
                    tracing::debug!(user = %principal.name, path = %request.uri().path(), "authenticated");
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(status) => {
                    tracing::info!(path = %request.uri().path(), "request refused: unauthenticated");
                    Ok(status.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn basic(user: &str, password: &str) -> http::HeaderMap {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers(&format!("Basic {encoded}"))
    }

    fn authenticator() -> (Arc<Authenticator>, String) {
        let (token, token_hash) = new_api_token();
        let config = AuthConfig {
            users: vec![UserConfig {
                name: "ada".into(),
                password_hash: hash_password("s3cret").unwrap(),
                role: Role::Admin,
            }],
            tokens: vec![TokenConfig {
                name: "dashboards".into(),
                token_hash,
                role: Role::Reader,
            }],
            session_ttl: Some("1h".into()),
        };
        (Arc::new(Authenticator::new(&config).unwrap()), token)
    }

    #[tokio::test]
    async fn passwords_tokens_and_sessions() {
        let (auth, token) = authenticator();
        let ada = auth
            .authenticate(&basic("ada", "s3cret"), None)
            .await
            .unwrap();
        assert_eq!((ada.name.as_str(), ada.role), ("ada", Role::Admin));
        // Go's Flight client sends Basic credentials without base64 padding.
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("ada:s3cret");
        assert!(
            auth.authenticate(&headers(&format!("Basic {unpadded}")), None)
                .await
                .is_ok()
        );
        for bad in [
            basic("ada", "wrong"),
            basic("nobody", "s3cret"),
            headers("Basic !!"),
        ] {
            let status = auth.authenticate(&bad, None).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert_eq!(status.message(), "unauthenticated");
        }
        let reader = auth
            .authenticate(&headers(&format!("Bearer {token}")), None)
            .await
            .unwrap();
        assert_eq!(reader.role, Role::Reader);
        assert!(
            auth.authenticate(&headers("Bearer cohort_guess"), None)
                .await
                .is_err()
        );
        assert!(
            auth.authenticate(&http::HeaderMap::new(), None)
                .await
                .is_err()
        );

        let session = auth.issue_session(&ada);
        let again = auth
            .authenticate(&headers(&format!("Bearer {session}")), None)
            .await
            .unwrap();
        assert_eq!((again.name.as_str(), again.role), ("ada", Role::Admin));
    }

    #[test]
    fn bad_configuration_is_refused_at_start() {
        let config = AuthConfig {
            users: vec![UserConfig {
                name: "ada".into(),
                password_hash: "plain-text-password".into(),
                role: Role::Admin,
            }],
            ..Default::default()
        };
        let err = Authenticator::new(&config).err().unwrap();
        assert!(err.contains("hash-password"), "{err}");
        let config = AuthConfig {
            tokens: vec![TokenConfig {
                name: "t".into(),
                token_hash: "sha256:abc".into(),
                role: Role::Reader,
            }],
            ..Default::default()
        };
        assert!(Authenticator::new(&config).is_err());
    }

    #[tokio::test]
    async fn disabled_auth_lets_everyone_in_as_admin() {
        let auth = Arc::new(Authenticator::new(&AuthConfig::default()).unwrap());
        let who = auth
            .authenticate(&http::HeaderMap::new(), None)
            .await
            .unwrap();
        assert_eq!(who.role, Role::Admin);
    }
}
