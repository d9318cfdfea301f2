//! `/admin/users/`: the user list with search and filters, and adding, editing, setting the
//! password of and deleting a user.
//!
//! Only superusers grant or revoke staff and superuser status, and only they change other staff
//! accounts: otherwise a staff member could take over a superuser by resetting its password.

use askama::Template;
use axum::{extract::State, http::StatusCode, response::Response};

use super::{
    form::{check_length, Errors},
    notice,
    pagination::{requested_page, Pager},
    render, render_with, see_other, AdminError, AdminId, AdminResult, Chrome, Params, StaffForm,
    StaffUser,
};
use crate::{
    domain::{Email, UserType},
    service::{
        accounts::{self, RegistrationForm},
        attachments, ServiceError,
    },
    state::AppState,
    store::{
        self,
        users::{User, UserChanges, UserFilter},
    },
};

/// Longest first or last name, in characters (the column's size).
const MAX_NAME_CHARS: usize = 150;

const ONLY_SUPERUSERS_GRANT: &str =
    "Only superusers can grant or revoke staff or superuser status.";
const ONLY_SUPERUSERS_MANAGE: &str =
    "Only superusers can change the accounts of other staff members.";

fn user_types() -> Vec<&'static str> {
    UserType::ALL.iter().map(|t| t.as_str()).collect()
}

/// `yes`, `no` or blank (either), as the filter selects spell a flag.
fn flag_text(flag: Option<bool>) -> String {
    match flag {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => String::new(),
    }
}

/// Whether `staff` may change `target`: superusers any account, other staff ordinary accounts
/// and their own.
fn may_manage(staff: &StaffUser, target: &User) -> bool {
    staff.is_superuser() || target.id == staff.user.id || !(target.is_staff || target.is_superuser)
}

/// User `id`, if `staff` may change them. Errors: 404, or 403 for another staff member's
/// account when `staff` is not a superuser.
async fn managed_target(state: &AppState, staff: &StaffUser, id: i64) -> AdminResult<User> {
    let target = target(state, id).await?;
    if !may_manage(staff, &target) {
        return Err(AdminError::Forbidden(ONLY_SUPERUSERS_MANAGE.into()));
    }
    Ok(target)
}

async fn target(state: &AppState, id: i64) -> AdminResult<User> {
    store::users::by_id(&state.db, id)
        .await?
        .ok_or(AdminError::NotFound)
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<User>,
    /// Bytes of uploads each listed user keeps (absent: none).
    used: std::collections::HashMap<i64, i64>,
    pager: Pager,
    q: String,
    user_type: String,
    staff: String,
    active: String,
    user_types: Vec<&'static str>,
}

/// `GET /admin/users/`: users, paged, searched with `q` and filtered by `user_type`, `staff`
/// and `active`.
pub async fn list(
    State(state): State<AppState>,
    staff: StaffUser,
    params: Params,
) -> AdminResult<Response> {
    let filter = UserFilter {
        // Usernames are searched in their stored (NFKC) form.
        search: params.username("q"),
        user_type: params
            .text("user_type")
            .and_then(|t| UserType::parse(&t).ok()),
        staff: params.flag("staff"),
        active: params.flag("active"),
    };
    let q = filter.search.clone().unwrap_or_default();
    let user_type = filter
        .user_type
        .map(|t| t.as_str().to_owned())
        .unwrap_or_default();
    let (staff_flag, active_flag) = (flag_text(filter.staff), flag_text(filter.active));
    let keep = [
        ("q", q.clone()),
        ("user_type", user_type.clone()),
        ("staff", staff_flag.clone()),
        ("active", active_flag.clone()),
    ];
    let page = requested_page(&params)?;
    let total = store::users::count_matching(&state.db, &filter).await?;
    let pager = Pager::new(page, total, "/admin/users/", &keep)?;
    let users = store::users::matching(&state.db, &filter, pager.limit(), pager.offset()).await?;
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    let used = store::attachments::used_by(&state.db, &ids)
        .await?
        .into_iter()
        .collect();
    render(&UsersPage {
        chrome: staff.chrome("users", notice(&params)),
        users,
        used,
        pager,
        q,
        user_type,
        staff: staff_flag,
        active: active_flag,
        user_types: user_types(),
    })
}

#[derive(Template)]
#[template(path = "admin/user_add.html")]
struct AddPage {
    chrome: Chrome,
    username: String,
    email: String,
    user_type: String,
    is_staff: bool,
    is_superuser: bool,
    can_grant: bool,
    user_types: Vec<&'static str>,
    errors: Errors,
}

impl AddPage {
    fn empty(staff: &StaffUser) -> Self {
        AddPage {
            chrome: staff.chrome("users", None),
            username: String::new(),
            email: String::new(),
            user_type: UserType::default().as_str().to_owned(),
            is_staff: false,
            is_superuser: false,
            can_grant: staff.is_superuser(),
            user_types: user_types(),
            errors: Errors::default(),
        }
    }
}

/// `GET /admin/users/add/`: the form for a new user.
pub async fn add_page(staff: StaffUser) -> AdminResult<Response> {
    render(&AddPage::empty(&staff))
}

/// `POST /admin/users/add/`: creates a user under the registration rules; only a superuser may
/// make staff or superusers (403 otherwise).
pub async fn add(State(state): State<AppState>, posted: StaffForm) -> AdminResult<Response> {
    let StaffForm { staff, form } = posted;
    let mut page = AddPage::empty(&staff);
    page.username = form.text("username");
    page.email = form.text("email");
    page.user_type = form.text("user_type");
    page.is_staff = form.flag("is_staff").unwrap_or(false);
    page.is_superuser = form.flag("is_superuser").unwrap_or(false);
    if !staff.is_superuser() && (page.is_staff || page.is_superuser) {
        page.errors.add("is_staff", ONLY_SUPERUSERS_GRANT);
        return render_with(StatusCode::FORBIDDEN, &page);
    }
    let user_type = Some(page.user_type.clone()).filter(|t| !t.is_empty());
    // A field refused for holding NUL is absent, its reason already recorded.
    let refused = form.refused().clone();
    let accepted = |name: &str, value: String| (!refused.has(name)).then_some(value);
    let registration = RegistrationForm {
        username: accepted("username", page.username.clone()),
        email: accepted("email", page.email.clone()),
        password: accepted("password", form.raw("password")),
        password_confirm: accepted("password_confirm", form.raw("password_confirm")),
        user_type,
    };
    let created = accounts::register(
        &state,
        registration,
        refused.clone(),
        page.is_staff,
        page.is_superuser,
    )
    .await;
    match created {
        Ok(user) => {
            tracing::info!(
                user.id = user.id,
                by = staff.user.id,
                "admin created a user"
            );
            Ok(see_other(&format!(
                "/admin/users/{}/?done=created",
                user.id
            )))
        }
        Err(ServiceError::Validation(errors)) => {
            page.errors = Errors::from(errors);
            render(&page)
        }
        Err(other) => Err(other.into()),
    }
}

/// The edit form's values, as stored or as submitted.
#[derive(Debug, Clone)]
struct UserForm {
    first_name: String,
    last_name: String,
    email: String,
    user_type: String,
    is_staff: bool,
    is_superuser: bool,
    is_active: bool,
}

impl From<&User> for UserForm {
    fn from(user: &User) -> Self {
        UserForm {
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            email: user.email.clone(),
            user_type: user.user_type.as_str().to_owned(),
            is_staff: user.is_staff,
            is_superuser: user.is_superuser,
            is_active: user.is_active,
        }
    }
}

impl UsersPage {
    /// Bytes `user_id`'s uploads take.
    fn used_by(&self, user_id: &i64) -> i64 {
        self.used.get(user_id).copied().unwrap_or(0)
    }
}

#[derive(Template)]
#[template(path = "admin/user_edit.html")]
struct EditPage {
    chrome: Chrome,
    target: User,
    /// `used of quota bytes`.
    storage: String,
    /// The user's own quota as the form shows it (empty: the default).
    own_quota: String,
    /// The user's own AI token budgets as the form shows them (empty: the default).
    own_daily: String,
    own_monthly: String,
    /// The configured defaults, for the form's help.
    default_budgets: String,
    form: UserForm,
    /// False when only a superuser may change this account: the page is read-only.
    can_manage: bool,
    can_grant: bool,
    is_self: bool,
    user_types: Vec<&'static str>,
    errors: Errors,
}

impl EditPage {
    fn new(staff: &StaffUser, target: User, notice: Option<&'static str>) -> Self {
        EditPage {
            chrome: staff.chrome("users", notice),
            form: UserForm::from(&target),
            can_manage: may_manage(staff, &target),
            can_grant: staff.is_superuser(),
            is_self: target.id == staff.user.id,
            own_quota: String::new(),
            own_daily: String::new(),
            own_monthly: String::new(),
            default_budgets: String::new(),
            target,
            storage: String::new(),
            user_types: user_types(),
            errors: Errors::default(),
        }
    }

    /// The page with the user's storage use filled in.
    async fn with_storage(mut self, state: &AppState) -> AdminResult<Self> {
        let storage = attachments::usage(state, self.target.id).await?;
        self.storage = format!("{} of {} bytes", storage.used, storage.quota);
        self.own_quota = storage.own.map(|q| q.to_string()).unwrap_or_default();
        let (daily, monthly) = store::ai::own_budgets(&state.db, self.target.id).await?;
        self.own_daily = daily.map(|v| v.to_string()).unwrap_or_default();
        self.own_monthly = monthly.map(|v| v.to_string()).unwrap_or_default();
        let shown = |v: Option<i64>| v.map_or("none".to_owned(), |v| v.to_string());
        let ai = &state.config.ai;
        self.default_budgets = format!(
            "defaults: {} a day, {} a month",
            shown(ai.daily_tokens),
            shown(ai.monthly_tokens)
        );
        Ok(self)
    }
}

/// `GET /admin/users/{id}/`: the form to edit a user.
pub async fn edit_page(
    State(state): State<AppState>,
    staff: StaffUser,
    AdminId(id): AdminId,
    params: Params,
) -> AdminResult<Response> {
    let target = target(&state, id).await?;
    render(
        &EditPage::new(&staff, target, notice(&params))
            .with_storage(&state)
            .await?,
    )
}

/// `POST /admin/users/{id}/quota/`: sets the user's own storage quota in bytes
/// (`storage_quota`; empty for the default, `MRM_STORAGE_QUOTA_BYTES`).
pub async fn set_quota(
    State(state): State<AppState>,
    AdminId(id): AdminId,
    posted: StaffForm,
) -> AdminResult<Response> {
    let StaffForm { staff, form } = posted;
    let target = managed_target(&state, &staff, id).await?;
    let raw = form.text("storage_quota");
    let mut errors = form.errors();
    let quota = optional_count(&raw, "bytes", "storage_quota", &mut errors);
    if !errors.is_empty() {
        return refused(&state, &staff, target, errors, |page| page.own_quota = raw).await;
    }
    attachments::set_quota(&state, id, quota).await?;
    tracing::info!(
        user.id = id,
        by = staff.user.id,
        "admin set a storage quota"
    );
    Ok(see_other(&format!("/admin/users/{id}/?done=saved")))
}

/// `POST /admin/users/{id}/`: saves a user's names, email, type and flags; only superusers see
/// and change privilege flags, and deactivating a user closes their live connections.
pub async fn edit(
    State(state): State<AppState>,
    AdminId(id): AdminId,
    posted: StaffForm,
) -> AdminResult<Response> {
    let StaffForm { staff, form } = posted;
    let target = managed_target(&state, &staff, id).await?;
    let mut page = EditPage::new(&staff, target, None);
    let target = &page.target;
    // A flag that was not sent keeps its value: non-superusers get no privilege fields at all.
    let submitted = UserForm {
        first_name: form.text("first_name"),
        last_name: form.text("last_name"),
        email: form.text("email"),
        user_type: form.text("user_type"),
        is_staff: form.flag("is_staff").unwrap_or(target.is_staff),
        is_superuser: form.flag("is_superuser").unwrap_or(target.is_superuser),
        is_active: form.flag("is_active").unwrap_or(target.is_active),
    };
    let mut errors = form.errors();
    let mut status = StatusCode::OK;
    check_length(
        &mut errors,
        "first_name",
        &submitted.first_name,
        MAX_NAME_CHARS,
    );
    check_length(
        &mut errors,
        "last_name",
        &submitted.last_name,
        MAX_NAME_CHARS,
    );
    if let Err(message) = Email::parse(&submitted.email) {
        errors.add("email", message);
    }
    let user_type = if errors.has("user_type") {
        target.user_type
    } else {
        UserType::parse(&submitted.user_type).unwrap_or_else(|message| {
            errors.add("user_type", message);
            target.user_type
        })
    };
    let privileges_changed =
        submitted.is_staff != target.is_staff || submitted.is_superuser != target.is_superuser;
    if privileges_changed && !staff.is_superuser() {
        errors.add("is_staff", ONLY_SUPERUSERS_GRANT);
        status = StatusCode::FORBIDDEN;
    } else if page.is_self && privileges_changed {
        // Another superuser has to do it, so nobody locks themselves out by accident.
        errors.add(
            "is_staff",
            "You cannot change your own staff or superuser status.",
        );
    }
    if page.is_self && !submitted.is_active {
        errors.add("is_active", "You cannot deactivate your own account.");
    }
    if !errors.is_empty() {
        page.form = UserForm {
            is_staff: if staff.is_superuser() {
                submitted.is_staff
            } else {
                target.is_staff
            },
            is_superuser: if staff.is_superuser() {
                submitted.is_superuser
            } else {
                target.is_superuser
            },
            ..submitted
        };
        page.errors = errors;
        return render_with(status, &page.with_storage(&state).await?);
    }
    let changes = UserChanges {
        first_name: &submitted.first_name,
        last_name: &submitted.last_name,
        email: &submitted.email,
        user_type,
        is_staff: submitted.is_staff,
        is_superuser: submitted.is_superuser,
        is_active: submitted.is_active,
    };
    let updated = store::users::update(&state.db, id, &changes)
        .await?
        .ok_or(AdminError::NotFound)?;
    if target.is_active && !updated.is_active {
        accounts::closed(&state, id).await;
    }
    tracing::info!(user.id = id, by = staff.user.id, "admin changed a user");
    Ok(see_other(&format!("/admin/users/{id}/?done=saved")))
}

#[derive(Template)]
#[template(path = "admin/user_password.html")]
struct PasswordPage {
    chrome: Chrome,
    target: User,
    errors: Errors,
}

/// `GET /admin/users/{id}/password/`: the form to set a user's password.
pub async fn password_page(
    State(state): State<AppState>,
    staff: StaffUser,
    AdminId(id): AdminId,
) -> AdminResult<Response> {
    let target = managed_target(&state, &staff, id).await?;
    render(&PasswordPage {
        chrome: staff.chrome("users", None),
        target,
        errors: Errors::default(),
    })
}

/// `POST /admin/users/{id}/password/`: sets a new password, ending the user's other sessions and
/// revoking their tokens (an admin changing their own password keeps this session).
pub async fn set_password(
    State(state): State<AppState>,
    AdminId(id): AdminId,
    posted: StaffForm,
) -> AdminResult<Response> {
    let StaffForm { staff, form } = posted;
    let target = managed_target(&state, &staff, id).await?;
    // Whoever knew the old password is signed out everywhere; the admin changing their own
    // password keeps this session.
    let keep = (id == staff.user.id).then_some(staff.key_hash.as_str());
    let password = form.raw("password");
    let confirm = form.raw("password_confirm");
    let outcome = if form.refused().is_empty() {
        accounts::change_password(&state, &target, password, &confirm, keep).await
    } else {
        Err(ServiceError::Validation(form.refused().clone()))
    };
    match outcome {
        Ok(_) => {}
        Err(ServiceError::Validation(errors)) => {
            return render(&PasswordPage {
                chrome: staff.chrome("users", None),
                target,
                errors: Errors::from(errors),
            });
        }
        Err(ServiceError::NotFound) => return Err(AdminError::NotFound),
        Err(err) => return Err(err.into()),
    }
    tracing::info!(user.id = id, by = staff.user.id, "admin set a password");
    Ok(see_other(&format!("/admin/users/{id}/?done=password")))
}

#[derive(Template)]
#[template(path = "admin/user_delete.html")]
struct DeletePage {
    chrome: Chrome,
    target: User,
    error: Option<&'static str>,
}

/// `GET /admin/users/{id}/delete/`: asks to confirm deleting a user.
pub async fn delete_page(
    State(state): State<AppState>,
    staff: StaffUser,
    AdminId(id): AdminId,
) -> AdminResult<Response> {
    let target = managed_target(&state, &staff, id).await?;
    let error = (target.id == staff.user.id).then_some(CANNOT_DELETE_SELF);
    render(&DeletePage {
        chrome: staff.chrome("users", None),
        target,
        error,
    })
}

const CANNOT_DELETE_SELF: &str = "You cannot delete your own account.";

/// `POST /admin/users/{id}/delete/`: deletes the user and closes their live connections; staff
/// cannot delete themselves (400).
pub async fn delete(
    State(state): State<AppState>,
    AdminId(id): AdminId,
    posted: StaffForm,
) -> AdminResult<Response> {
    let staff = posted.staff;
    let target = managed_target(&state, &staff, id).await?;
    if target.id == staff.user.id {
        return render_with(
            StatusCode::BAD_REQUEST,
            &DeletePage {
                chrome: staff.chrome("users", None),
                target,
                error: Some(CANNOT_DELETE_SELF),
            },
        );
    }
    store::users::delete(&state.db, id)
        .await?
        .ok_or(AdminError::NotFound)?;
    accounts::closed(&state, id).await;
    // Their uploads went with them; the objects nothing else refers to go now.
    state.files.nudge();
    tracing::info!(user.id = id, by = staff.user.id, "admin deleted a user");
    Ok(see_other("/admin/users/?done=deleted"))
}

/// A whole number of `unit` in form field `field`, 0 or more, or nothing for the default
/// (`None`); a bad value is recorded in `errors`.
fn optional_count(raw: &str, unit: &str, field: &str, errors: &mut Errors) -> Option<i64> {
    match raw.trim() {
        "" => None,
        text => {
            let count = text.parse::<i64>().ok().filter(|v| *v >= 0);
            if count.is_none() {
                errors.add(
                    field,
                    format!(
                        "Enter a whole number of {unit}, 0 or more, or nothing for the default."
                    ),
                );
            }
            count
        }
    }
}

/// The user's page again, answered 400 with the form's `errors` and its values as submitted
/// (`keep` puts them back).
async fn refused(
    state: &AppState,
    staff: &StaffUser,
    target: User,
    errors: Errors,
    keep: impl FnOnce(&mut EditPage),
) -> AdminResult<Response> {
    let mut page = EditPage::new(staff, target, None)
        .with_storage(state)
        .await?;
    keep(&mut page);
    page.errors = errors;
    render_with(StatusCode::BAD_REQUEST, &page)
}

/// `POST /admin/users/{id}/ai-budgets/`: sets the user's own AI token budgets
/// (`ai_daily_tokens`, `ai_monthly_tokens`; empty for the defaults, `MRM_AI_DAILY_TOKENS` and
/// `MRM_AI_MONTHLY_TOKENS`; 0 allows no AI replies).
pub async fn set_ai_budgets(
    State(state): State<AppState>,
    AdminId(id): AdminId,
    posted: StaffForm,
) -> AdminResult<Response> {
    let StaffForm { staff, form } = posted;
    let target = managed_target(&state, &staff, id).await?;
    let (raw_daily, raw_monthly) = (form.text("ai_daily_tokens"), form.text("ai_monthly_tokens"));
    let mut errors = form.errors();
    let daily = optional_count(&raw_daily, "tokens", "ai_daily_tokens", &mut errors);
    let monthly = optional_count(&raw_monthly, "tokens", "ai_monthly_tokens", &mut errors);
    if !errors.is_empty() {
        return refused(&state, &staff, target, errors, |page| {
            page.own_daily = raw_daily;
            page.own_monthly = raw_monthly;
        })
        .await;
    }
    crate::service::conversations::set_budgets(&state, id, daily, monthly).await?;
    tracing::info!(user.id = id, by = staff.user.id, "admin set AI budgets");
    Ok(see_other(&format!("/admin/users/{id}/?done=saved")))
}
