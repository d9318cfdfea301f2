//! Who may use the admin: the login and logout pages, `StaffUser` (a staff session, or a
//! redirect to the login page) and `StaffForm` (a staff session plus a form carrying the
//! session's CSRF token).

use askama::Template;
use axum::{
    extract::{FromRequest, FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use axum_extra::extract::CookieJar;

use super::{
    notice, render, render_with, see_other, AdminError, AdminResult, Chrome, FormData, Params,
};
use crate::{
    auth::{
        csrf,
        secret::{constant_time_eq, storage_hash},
        session,
    },
    client_addr::ClientAddr,
    service::{accounts, sessions, ServiceError},
    state::AppState,
    store::{self, sessions::SessionUser, users::User},
};

/// The hidden form field that carries the CSRF token, named as Django's admin names it.
pub const CSRF_FIELD: &str = "csrfmiddlewaretoken";

/// A signed-in, active staff member (`is_staff` or `is_superuser`).
#[derive(Debug, Clone)]
pub struct StaffUser {
    pub user: User,
    pub csrf_token: String,
    /// The hash of the session key, to end this session at logout or keep it on a password change.
    pub key_hash: String,
}

impl StaffUser {
    /// True for a superuser, who alone may grant staff rights and manage other staff.
    pub fn is_superuser(&self) -> bool {
        self.user.is_superuser
    }

    /// The page frame for this user: the current `section` of the navigation and an optional
    /// notice to show.
    pub fn chrome(&self, section: &'static str, notice: Option<&'static str>) -> Chrome {
        Chrome {
            user: Some(self.user.username.clone()),
            csrf_token: self.csrf_token.clone(),
            section,
            notice,
        }
    }
}

fn is_staff(user: &User) -> bool {
    user.is_staff || user.is_superuser
}

/// The session the request's cookie names, with its key hash; `None` without a live session.
async fn session_user(
    headers: &HeaderMap,
    state: &AppState,
) -> AdminResult<Option<(SessionUser, String)>> {
    let jar = CookieJar::from_headers(headers);
    let Some(key) = jar
        .get(session::SESSION_COOKIE)
        .map(|c| c.value())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let key_hash = storage_hash(key);
    let found = store::sessions::user(&state.db, &key_hash).await?;
    Ok(found.map(|found| (found, key_hash)))
}

/// The path and query that was asked for, as a link: routing trimmed the trailing slash, which
/// admin links always have.
fn requested_location(parts: &Parts) -> String {
    let path = parts.uri.path();
    let mut location = if path.ends_with('/') {
        path.to_owned()
    } else {
        format!("{path}/")
    };
    if let Some(query) = parts.uri.query() {
        location.push('?');
        location.push_str(query);
    }
    location
}

impl FromRequestParts<AppState> for StaffUser {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AdminResult<Self> {
        let Some((found, key_hash)) = session_user(&parts.headers, state).await? else {
            // A form posted without a session cannot be replayed after login: start afresh.
            let next = if csrf::is_safe(&parts.method) {
                requested_location(parts)
            } else {
                "/admin/".to_owned()
            };
            return Err(AdminError::Login { next });
        };
        tracing::Span::current().record("user.id", found.user.id);
        if !is_staff(&found.user) {
            return Err(AdminError::Forbidden(format!(
                "You are signed in as {}, which has no access to the administration area.",
                found.user.username
            )));
        }
        Ok(StaffUser {
            user: found.user,
            csrf_token: found.csrf_token,
            key_hash,
        })
    }
}

/// A form posted by a staff member, with the CSRF token of their session. Every admin action
/// takes one, so none can be forged from another site.
pub struct StaffForm {
    pub staff: StaffUser,
    pub form: FormData,
}

impl FromRequest<AppState> for StaffForm {
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &AppState) -> AdminResult<Self> {
        let (mut parts, body) = request.into_parts();
        let staff = StaffUser::from_request_parts(&mut parts, state).await?;
        let form = FormData::from_request(Request::from_parts(parts, body), state).await?;
        match form.get(CSRF_FIELD) {
            None | Some("") => Err(AdminError::Csrf("the CSRF token is missing.")),
            Some(sent) if constant_time_eq(sent, &staff.csrf_token) => {
                Ok(StaffForm { staff, form })
            }
            Some(_) => Err(AdminError::Csrf("the CSRF token is incorrect.")),
        }
    }
}

/// `/admin/login/`, returning to `next` afterwards.
pub fn login_url(next: &str) -> String {
    let next = safe_next(Some(next));
    if next == "/admin/" {
        return "/admin/login/".to_owned();
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("next", &next)
        .finish();
    format!("/admin/login/?{query}")
}

/// Where to go after logging in: an admin path of plain visible ASCII, or the dashboard. Anything
/// else could send the browser off-site or break the `Location` header.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with("/admin/")
                && next.bytes().all(|b| b.is_ascii_graphic())
                && !next.contains("/../")
                && !next.contains('\\') =>
        {
            next.to_owned()
        }
        _ => "/admin/".to_owned(),
    }
}

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    chrome: Chrome,
    username: String,
    next: String,
    error: Option<String>,
    /// A signed-in user without access, told why the admin refused them.
    signed_in_as: Option<String>,
}

impl LoginPage {
    fn new(next: String, notice: Option<&'static str>) -> Self {
        LoginPage {
            chrome: Chrome {
                notice,
                ..Chrome::default()
            },
            username: String::new(),
            next,
            error: None,
            signed_in_as: None,
        }
    }
}

/// `GET /admin/login/`: the login form; a staff member already signed in goes straight to
/// `next`.
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> AdminResult<Response> {
    let next = safe_next(params.get("next"));
    let mut page = LoginPage::new(next.clone(), notice(&params));
    if let Some((found, _)) = session_user(&headers, &state).await? {
        if is_staff(&found.user) {
            return Ok(see_other(&next));
        }
        page.signed_in_as = Some(found.user.username);
    }
    render(&page)
}

const WRONG_CREDENTIALS: &str = "Please enter the correct username and password for a staff \
                                 account. Note that both fields may be case-sensitive.";

/// `POST /admin/login/`: checks the username and password (rate-limited: 429 with
/// `Retry-After` in seconds), refuses non-staff accounts with 403, and on success starts a
/// session, sets its cookies and redirects (303) to `next`.
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    jar: CookieJar,
    form: FormData,
) -> AdminResult<Response> {
    let mut page = LoginPage::new(safe_next(form.get("next")), None);
    page.username = form.text("username");
    let username = form.get("username").unwrap_or("").to_owned();
    let password = form.get("password").unwrap_or("").to_owned();
    // Not held while the password waits for its hash.
    drop(form);
    let user = match accounts::authenticate(&state, client, Some(username), Some(password)).await {
        Ok(user) => user,
        Err(ServiceError::InvalidCredentials | ServiceError::Validation(_)) => {
            page.error = Some(WRONG_CREDENTIALS.to_owned());
            return render(&page);
        }
        Err(ServiceError::RateLimited(secs)) => {
            page.error = Some(format!(
                "Too many login attempts. Try again in {secs} second{}.",
                if secs == 1 { "" } else { "s" }
            ));
            let mut response = render_with(StatusCode::TOO_MANY_REQUESTS, &page)?;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return Ok(response);
        }
        Err(other) => return Err(other.into()),
    };
    if !is_staff(&user) {
        tracing::info!(user.id = user.id, "admin login refused: not staff");
        page.error = Some(format!(
            "The account {} has no access to the administration area. Sign in with a staff account.",
            user.username
        ));
        return render_with(StatusCode::FORBIDDEN, &page);
    }
    let previous = jar.get(session::SESSION_COOKIE).map(|c| c.value());
    let new_session = sessions::log_in(&state, &user, previous).await?;
    tracing::info!(user.id = user.id, "admin login");
    let mut response = see_other(&page.next);
    for cookie in session::cookies(&new_session, state.config.secure_cookies) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[derive(Template)]
#[template(path = "admin/logout.html")]
struct LogoutPage {
    chrome: Chrome,
}

/// Logging out is a form post (a link could be followed by anyone's page); this page holds the form.
pub async fn logout_page(staff: StaffUser) -> AdminResult<Response> {
    render(&LogoutPage {
        chrome: staff.chrome("", None),
    })
}

/// `POST /admin/logout/`: ends this session, clears the session cookie and redirects (303) to the
/// login page.
pub async fn logout(State(state): State<AppState>, posted: StaffForm) -> AdminResult<Response> {
    sessions::log_out(&state, &posted.staff.key_hash).await?;
    tracing::info!(user.id = posted.staff.user.id, "admin logout");
    let mut response = see_other("/admin/login/?done=logged_out");
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::clear_cookie(state.config.secure_cookies),
    );
    Ok(response.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admin_paths_are_followed_after_login() {
        for ok in ["/admin/", "/admin/users/?q=a%20b&page=2"] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/admin/",
            "/api/me/",
            "/admin/\r\nX: y",
            "/admin/../api/",
            "/admin/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/admin/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/admin/");
        assert_eq!(
            login_url("/admin/users/?page=2"),
            "/admin/login/?next=%2Fadmin%2Fusers%2F%3Fpage%3D2"
        );
        assert_eq!(login_url("/admin/"), "/admin/login/");
    }
}
