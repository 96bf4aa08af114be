//! Who may do what: accounts with roles, browser sessions, API tokens and
//! the login rate limit.
//!
//! - **Accounts** (`<state-dir>/accounts.json`, mode 0600) hold an argon2id
//!   hash of each password and a role: `admin` changes things, `viewer`
//!   only reads. On first start an `admin` account gets a generated
//!   password, printed once and written to `initial-admin-password`
//!   (mode 0400) until it is changed.
//! - **Sessions** live in memory: a random 256-bit id in a `__Host-`
//!   cookie (`Secure; HttpOnly; SameSite=Strict; Path=/`), a CSRF token
//!   the browser must send back in `X-CSRF-Token` on every change, and an
//!   idle timeout. Only a hash of the id is kept.
//! - **API tokens** (`Authorization: Bearer gzt_<id>_<secret>`) have a role
//!   of their own, are shown once and stored as a SHA-256 hash (they are
//!   256 random bits: a slow hash adds nothing), and can be revoked.
//! - **Rate limit**: after [`MAX_FAILURES`] failed logins from an address
//!   or for an account within [`FAILURE_WINDOW`], further attempts are
//!   refused (429) until the window has passed.
//!
//! Secrets are compared in constant time (`subtle`).

use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

/// Name of the session cookie; `__Host-` makes browsers insist on Secure,
/// Path=/ and no Domain.
pub const SESSION_COOKIE: &str = "__Host-gazelle-session";
/// Header a browser session sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Failed logins allowed per address or account within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// How long failed logins count.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// File of the first admin password, in the state directory.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

/// What an account or token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and changes everything.
    Admin,
    /// Reads everything, changes nothing (but its own password).
    Viewer,
}

/// Who made a request, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account (for a token: `token:<name>`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// A session (with its CSRF token) or a token.
    pub via: Via,
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A browser session: changes need the CSRF token and our Origin.
    Session {
        /// The session's CSRF token.
        csrf: String,
        /// The hash of the session id.
        key: String,
    },
    /// An API token.
    Token {
        /// Its id.
        id: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Account {
    username: String,
    role: Role,
    password_hash: String,
    created: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    id: String,
    name: String,
    role: Role,
    owner: String,
    sha256: String,
    created: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsFile {
    accounts: Vec<Account>,
    tokens: Vec<TokenRecord>,
}

/// An account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountInfo {
    /// Its name.
    pub username: String,
    /// What it may do.
    pub role: Role,
    /// When it was made, UTC.
    pub created: String,
}

/// A token as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// Its id (the part after `gzt_`).
    pub id: String,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The account that made it.
    pub owner: String,
    /// When it was made, UTC.
    pub created: String,
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong name or password (which one is not said).
    #[error("wrong username or password")]
    BadCredentials,
    /// Too many failures.
    #[error("too many failed logins; try again in {0} s")]
    RateLimited(u64),
    /// A name or password that does not fit the rules.
    #[error("{0}")]
    Invalid(String),
    /// No such account or token.
    #[error("{0}")]
    NotFound(String),
    /// Already exists / would leave no admin.
    #[error("{0}")]
    Conflict(String),
    /// The accounts file could not be read or written.
    #[error("{0}")]
    Storage(String),
}

struct Session {
    username: String,
    role: Role,
    csrf: String,
    last_seen: Instant,
}

#[derive(Default)]
struct Failures {
    by_ip: HashMap<IpAddr, Vec<Instant>>,
    by_user: HashMap<String, Vec<Instant>>,
}

/// Accounts, tokens, sessions and the login rate limit.
pub struct Auth {
    file: PathBuf,
    data: Mutex<AccountsFile>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<Failures>,
    /// How long a session may stay unused.
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("file", &self.file)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` random bytes, hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the kernel's random source");
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// Equal, in time that does not depend on where they differ.
pub fn secret_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn now_text() -> String {
    appliance::store::timestamp(SystemTime::now())
}

/// A password people can type: 20 characters from an alphabet without
/// look-alikes (about 100 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the kernel's random source");
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Storage(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Storage(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Storage(format!("hashing the password: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn check_username(name: &str) -> Result<(), AuthError> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "username {name:?}: use 1 to 32 characters from A-Z a-z 0-9 . _ -"
        )))
    }
}

fn check_password(password: &str) -> Result<(), AuthError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD || password.len() > 1024 {
        return Err(AuthError::Invalid(format!(
            "the password has {n} characters; use {MIN_PASSWORD} to 1024"
        )));
    }
    Ok(())
}

/// Writes `text` to `path` atomically with mode `mode`.
pub fn write_private(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// What [`Auth::open`] did on a first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstStart {
    /// The admin's password (generated, or the one given).
    pub password: String,
    /// Where it was written (only when generated).
    pub file: Option<PathBuf>,
}

impl Auth {
    /// Opens the accounts in `state_dir`. Without an accounts file, makes
    /// one with an `admin` account whose password is `initial` or else a
    /// generated one (written to [`INITIAL_PASSWORD_FILE`]), and returns it.
    pub fn open(
        state_dir: &Path,
        initial: Option<String>,
        idle_timeout: Duration,
    ) -> Result<(Self, Option<FirstStart>), AuthError> {
        let file = state_dir.join("accounts.json");
        let mut first = None;
        let data = if file.exists() {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| AuthError::Storage(format!("reading {}: {e}", file.display())))?;
            serde_json::from_str(&text)
                .map_err(|e| AuthError::Storage(format!("{}: {e}", file.display())))?
        } else {
            let generated = initial.is_none();
            let password = initial.unwrap_or_else(generate_password);
            check_password(&password)?;
            let data = AccountsFile {
                accounts: vec![Account {
                    username: "admin".into(),
                    role: Role::Admin,
                    password_hash: hash_password(&password)?,
                    created: now_text(),
                }],
                tokens: Vec::new(),
            };
            let mut written = None;
            if generated {
                let path = state_dir.join(INITIAL_PASSWORD_FILE);
                write_private(&path, &format!("{password}\n"), 0o400)
                    .map_err(|e| AuthError::Storage(format!("writing {}: {e}", path.display())))?;
                written = Some(path);
            }
            first = Some(FirstStart {
                password,
                file: written,
            });
            data
        };
        let auth = Self {
            file,
            data: Mutex::new(data),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(Failures::default()),
            idle_timeout,
        };
        if first.is_some() {
            auth.save(&lock(&auth.data))?;
        }
        Ok((auth, first))
    }

    fn save(&self, data: &AccountsFile) -> Result<(), AuthError> {
        let text =
            serde_json::to_string_pretty(data).map_err(|e| AuthError::Storage(e.to_string()))?;
        write_private(&self.file, &text, 0o600)
            .map_err(|e| AuthError::Storage(format!("writing {}: {e}", self.file.display())))
    }

    /// Seconds until `ip` or `username` may try again, if they are locked out.
    fn locked_out(&self, ip: IpAddr, username: &str) -> Option<u64> {
        let mut f = lock(&self.failures);
        let now = Instant::now();
        let mut wait = None;
        let mut check = |list: &mut Vec<Instant>| {
            list.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
            if list.len() >= MAX_FAILURES as usize {
                let oldest = list[0];
                let left = FAILURE_WINDOW.saturating_sub(now.duration_since(oldest));
                wait = Some(wait.unwrap_or(0).max(left.as_secs().max(1)));
            }
        };
        if let Some(list) = f.by_ip.get_mut(&ip) {
            check(list);
        }
        if let Some(list) = f.by_user.get_mut(username) {
            check(list);
        }
        // Forget addresses and names with nothing left to count.
        f.by_ip.retain(|_, l| !l.is_empty());
        f.by_user.retain(|_, l| !l.is_empty());
        wait
    }

    fn record_failure(&self, ip: IpAddr, username: &str) {
        let mut f = lock(&self.failures);
        let now = Instant::now();
        f.by_ip.entry(ip).or_default().push(now);
        if username.len() <= 64 {
            f.by_user.entry(username.to_owned()).or_default().push(now);
        }
    }

    /// Checks a password (slow: argon2; call it off the async threads).
    /// Refuses at once while `ip` or the account is rate-limited.
    pub fn verify(&self, ip: IpAddr, username: &str, password: &str) -> Result<Role, AuthError> {
        if let Some(wait) = self.locked_out(ip, username) {
            return Err(AuthError::RateLimited(wait));
        }
        let account = lock(&self.data)
            .accounts
            .iter()
            .find(|a| a.username == username)
            .cloned();
        // An unknown name costs a hash too, so timing does not tell
        // which names exist.
        let (hash, role) = match &account {
            Some(a) => (a.password_hash.clone(), Some(a.role)),
            None => (DUMMY_HASH.with(Clone::clone), None),
        };
        match (verify_password(password, &hash), role) {
            (true, Some(role)) => Ok(role),
            _ => {
                self.record_failure(ip, username);
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// A new session for `username`: (cookie value, CSRF token).
    pub fn create_session(&self, username: &str, role: Role) -> (String, String) {
        let id = random_hex(32);
        let csrf = random_hex(32);
        let mut sessions = lock(&self.sessions);
        let idle = self.idle_timeout;
        sessions.retain(|_, s| s.last_seen.elapsed() < idle);
        sessions.insert(
            sha256_hex(&id),
            Session {
                username: username.to_owned(),
                role,
                csrf: csrf.clone(),
                last_seen: Instant::now(),
            },
        );
        (id, csrf)
    }

    /// The principal of a session cookie value, if the session is alive
    /// (and then it is touched).
    pub fn session(&self, cookie: &str) -> Option<Principal> {
        let key = sha256_hex(cookie);
        let mut sessions = lock(&self.sessions);
        let session = sessions.get_mut(&key)?;
        if session.last_seen.elapsed() >= self.idle_timeout {
            sessions.remove(&key);
            return None;
        }
        session.last_seen = Instant::now();
        Some(Principal {
            name: session.username.clone(),
            role: session.role,
            via: Via::Session {
                csrf: session.csrf.clone(),
                key,
            },
        })
    }

    /// Ends a session.
    pub fn end_session(&self, key: &str) {
        lock(&self.sessions).remove(key);
    }

    /// Ends every session of `username` (after a password change or
    /// removal), but `keep`.
    fn end_sessions_of(&self, username: &str, keep: Option<&str>) {
        lock(&self.sessions).retain(|k, s| s.username != username || Some(k.as_str()) == keep);
    }

    /// The principal of a bearer token, if it is a live one.
    pub fn token(&self, bearer: &str) -> Option<Principal> {
        let rest = bearer.strip_prefix("gzt_")?;
        let (id, secret) = rest.split_once('_')?;
        let data = lock(&self.data);
        let record = data.tokens.iter().find(|t| t.id == id)?;
        secret_eq(&sha256_hex(secret), &record.sha256).then(|| Principal {
            name: format!("token:{}", record.name),
            role: record.role,
            via: Via::Token { id: id.to_owned() },
        })
    }

    /// Makes a token; returns its info and its secret form (shown once).
    pub fn create_token(
        &self,
        owner: &str,
        name: &str,
        role: Role,
    ) -> Result<(TokenInfo, String), AuthError> {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(AuthError::Invalid(
                "name the token with 1 to 64 printable characters".into(),
            ));
        }
        let id = random_hex(8);
        let secret = random_hex(32);
        let record = TokenRecord {
            id: id.clone(),
            name: name.to_owned(),
            role,
            owner: owner.to_owned(),
            sha256: sha256_hex(&secret),
            created: now_text(),
        };
        let info = token_info(&record);
        let mut data = lock(&self.data);
        data.tokens.push(record);
        if let Err(e) = self.save(&data) {
            data.tokens.pop();
            return Err(e);
        }
        Ok((info, format!("gzt_{id}_{secret}")))
    }

    /// Every token.
    pub fn tokens(&self) -> Vec<TokenInfo> {
        lock(&self.data).tokens.iter().map(token_info).collect()
    }

    /// Revokes a token.
    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo, AuthError> {
        let mut data = lock(&self.data);
        let pos = data
            .tokens
            .iter()
            .position(|t| t.id == id)
            .ok_or_else(|| AuthError::NotFound(format!("no token {id:?}")))?;
        let removed = data.tokens.remove(pos);
        if let Err(e) = self.save(&data) {
            data.tokens.insert(pos, removed);
            return Err(e);
        }
        Ok(token_info(&removed))
    }

    /// Every account.
    pub fn accounts(&self) -> Vec<AccountInfo> {
        lock(&self.data)
            .accounts
            .iter()
            .map(|a| AccountInfo {
                username: a.username.clone(),
                role: a.role,
                created: a.created.clone(),
            })
            .collect()
    }

    /// Makes an account (slow: argon2).
    pub fn create_account(
        &self,
        username: &str,
        role: Role,
        password: &str,
    ) -> Result<AccountInfo, AuthError> {
        check_username(username)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        let mut data = lock(&self.data);
        if data.accounts.iter().any(|a| a.username == username) {
            return Err(AuthError::Conflict(format!(
                "an account {username:?} exists already"
            )));
        }
        let account = Account {
            username: username.to_owned(),
            role,
            password_hash: hash,
            created: now_text(),
        };
        let info = AccountInfo {
            username: account.username.clone(),
            role,
            created: account.created.clone(),
        };
        data.accounts.push(account);
        if let Err(e) = self.save(&data) {
            data.accounts.pop();
            return Err(e);
        }
        Ok(info)
    }

    /// Removes an account (not the last admin) and ends its sessions.
    pub fn delete_account(&self, username: &str) -> Result<(), AuthError> {
        let mut data = lock(&self.data);
        let pos = data
            .accounts
            .iter()
            .position(|a| a.username == username)
            .ok_or_else(|| AuthError::NotFound(format!("no account {username:?}")))?;
        let admins = data
            .accounts
            .iter()
            .filter(|a| a.role == Role::Admin)
            .count();
        if data.accounts[pos].role == Role::Admin && admins == 1 {
            return Err(AuthError::Conflict(
                "that is the last admin account; make another admin first".into(),
            ));
        }
        let removed = data.accounts.remove(pos);
        if let Err(e) = self.save(&data) {
            data.accounts.insert(pos, removed);
            return Err(e);
        }
        drop(data);
        self.end_sessions_of(username, None);
        Ok(())
    }

    /// Changes `username`'s password after checking the current one
    /// (slow: argon2, twice). Other sessions of the account end.
    pub fn change_password(
        &self,
        ip: IpAddr,
        username: &str,
        current: &str,
        new: &str,
        keep_session: Option<&str>,
    ) -> Result<(), AuthError> {
        self.verify(ip, username, current)?;
        check_password(new)?;
        let hash = hash_password(new)?;
        let mut data = lock(&self.data);
        let account = data
            .accounts
            .iter_mut()
            .find(|a| a.username == username)
            .ok_or_else(|| AuthError::NotFound(format!("no account {username:?}")))?;
        let old = std::mem::replace(&mut account.password_hash, hash);
        if let Err(e) = self.save(&data) {
            if let Some(a) = data.accounts.iter_mut().find(|a| a.username == username) {
                a.password_hash = old;
            }
            return Err(e);
        }
        drop(data);
        self.end_sessions_of(username, keep_session);
        // The generated first password is no longer the admin's.
        if let Some(dir) = self.file.parent() {
            let _ = std::fs::remove_file(dir.join(INITIAL_PASSWORD_FILE));
        }
        Ok(())
    }
}

fn token_info(t: &TokenRecord) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role,
        owner: t.owner.clone(),
        created: t.created.clone(),
    }
}

thread_local! {
    /// A hash no password matches, checked for unknown usernames.
    static DUMMY_HASH: String = hash_password(&random_hex(16)).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    /// Accounts in `dir` whose admin's password is "correct horse".
    fn with_password(dir: &Path, idle: Duration) -> Auth {
        Auth::open(dir, Some("correct horse".into()), idle)
            .unwrap()
            .0
    }

    #[test]
    fn first_start_makes_an_admin_with_a_generated_password_once() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, first) = Auth::open(dir.path(), None, Duration::from_secs(60)).unwrap();
        let first = first.unwrap();
        let file = first.file.clone().unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim(),
            first.password
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o400);
        assert_eq!(mode(&dir.path().join("accounts.json")), 0o600);
        assert_eq!(
            auth.verify(IP, "admin", &first.password).unwrap(),
            Role::Admin
        );
        let text = std::fs::read_to_string(dir.path().join("accounts.json")).unwrap();
        assert!(text.contains("$argon2id$"), "{text}");
        assert!(!text.contains(&first.password));
        drop(auth);
        let (_, again) = Auth::open(dir.path(), None, Duration::from_secs(60)).unwrap();
        assert!(again.is_none(), "a second start makes no new password");
    }

    #[test]
    fn failed_logins_are_rate_limited_even_with_the_right_password() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_password(dir.path(), Duration::from_secs(60));
        for _ in 0..MAX_FAILURES {
            assert!(matches!(
                auth.verify(IP, "admin", "wrong password"),
                Err(AuthError::BadCredentials)
            ));
        }
        assert!(matches!(
            auth.verify(IP, "admin", "correct horse"),
            Err(AuthError::RateLimited(_))
        ));
    }

    #[test]
    fn tokens_are_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_password(dir.path(), Duration::from_secs(60));
        let (info, secret) = auth.create_token("admin", "ci", Role::Viewer).unwrap();
        let text = std::fs::read_to_string(dir.path().join("accounts.json")).unwrap();
        let raw = secret.rsplit('_').next().unwrap();
        assert!(!text.contains(raw), "the secret is not stored");
        assert_eq!(auth.token(&secret).unwrap().role, Role::Viewer);
        let mut forged = secret.clone();
        forged.pop();
        forged.push('x');
        assert!(auth.token(&forged).is_none());
        auth.revoke_token(&info.id).unwrap();
        assert!(auth.token(&secret).is_none());
    }

    #[test]
    fn sessions_expire_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let auth = with_password(dir.path(), Duration::from_millis(50));
        let (id, _) = auth.create_session("admin", Role::Admin);
        assert!(auth.session(&id).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(auth.session(&id).is_none());
    }
}
