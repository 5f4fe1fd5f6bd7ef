//! `gigafab org|project|user|token`: organisations, projects, users and tokens.

use super::*;

pub(super) async fn org(c: OrgCmd) -> Result<()> {
    match c {
        OrgCmd::Create { name, category, g } => {
            let body = gigafab_api::CreateOrg {
                name,
                category: name_of(&category),
                country: None,
            };
            let r = g.conn.api()?.post(&["orgs"], Some(&body)).await?;
            show_as(&g, &r, |o: &gigafab_api::Org| {
                format!("created org {} (id {}, {})\n", o.name, o.id, o.category)
            })
        }
        OrgCmd::List(a) => {
            let r = a.g.conn.api()?.get_list(&["orgs"], &[], true).await?;
            show_as(&a.g, &r, |p: &gigafab_api::Page<gigafab_api::Org>| {
                render::orgs(&p.items)
            })
        }
    }
}

pub(super) async fn project(c: ProjectCmd) -> Result<()> {
    match c {
        ProjectCmd::Create {
            name,
            org,
            members,
            g,
        } => {
            let body = gigafab_api::CreateProject {
                org,
                name,
                members: (!members.is_empty()).then_some(members),
            };
            let r = g.conn.api()?.post(&["projects"], Some(&body)).await?;
            show_as(&g, &r, |p: &gigafab_api::Project| {
                format!(
                    "created project {} (id {}) in org {}\n",
                    p.name, p.id, p.org
                )
            })
        }
        ProjectCmd::List(a) => {
            let r = a.g.conn.api()?.get_list(&["projects"], &[], true).await?;
            show_as(&a.g, &r, |p: &gigafab_api::Page<gigafab_api::Project>| {
                render::projects(&p.items)
            })
        }
        ProjectCmd::AddMember { project, user, g } => {
            let body = gigafab_api::AddMember {
                user: gigafab_api::UserId(user),
            };
            let path = [
                "projects".to_string(),
                project.to_string(),
                "members".into(),
            ];
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let r = g.conn.api()?.post(&path, Some(&body)).await?;
            show_as(&g, &r, |p: &gigafab_api::Project| {
                render::projects(std::slice::from_ref(p))
            })
        }
        ProjectCmd::RemoveMember { project, user, g } => {
            let path = [
                "projects".to_string(),
                project.to_string(),
                "members".into(),
                user.to_string(),
            ];
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let r = g.conn.api()?.delete(&path).await?;
            show_as(&g, &r, |p: &gigafab_api::Project| {
                render::projects(std::slice::from_ref(p))
            })
        }
    }
}

/// The body of `POST /users`; owners and members need an organisation.
pub(super) fn user_body(
    name: &str,
    org: Option<&str>,
    role: Role,
) -> Result<gigafab_api::CreateUser> {
    if org.is_none() && matches!(role, Role::Owner | Role::Member) {
        bail!("--org is required for a user with role {}", name_of(&role))
    }
    Ok(gigafab_api::CreateUser {
        name: name.to_string(),
        org: org.map(str::to_string),
        role: Some(name_of(&role)),
        email: None,
        oidc_subject: None,
    })
}

pub(super) async fn user(c: UserCmd) -> Result<()> {
    match c {
        UserCmd::Create {
            name,
            org,
            role,
            email,
            oidc_subject,
            g,
        } => {
            let body = gigafab_api::CreateUser {
                email,
                oidc_subject,
                ..user_body(&name, org.as_deref(), role)?
            };
            let r = g.conn.api()?.post(&["users"], Some(&body)).await?;
            if g.output == Format::Table {
                let u: gigafab_api::NewUser = typed(&r.value)?;
                let org = u.org.map(|o| format!(", org {o}")).unwrap_or_default();
                note(&format!(
                    "created user {} (id {}, {}{org})",
                    u.name, u.id, u.role
                ));
            }
            show_as(&g, &r, |u: &gigafab_api::NewUser| {
                format!("token for {} (shown once): {}\n", u.name, u.token)
            })
        }
        UserCmd::List(a) => {
            let r = a.g.conn.api()?.get_list(&["users"], &[], true).await?;
            show_as(&a.g, &r, |p: &gigafab_api::Page<gigafab_api::User>| {
                render::users(&p.items)
            })
        }
        UserCmd::Disable { id, g } => {
            let r = g
                .conn
                .api()?
                .post(&["users", &id.to_string(), "disable"], http::NO_BODY)
                .await?;
            show_as(&g, &r, |d: &gigafab_api::DisabledUser| {
                format!(
                    "disabled user {} ({} tokens revoked, {} queued jobs cancelled)\n",
                    d.id,
                    d.tokens_revoked,
                    d.queued_jobs_cancelled.len()
                )
            })
        }
    }
}

pub(super) async fn token(c: TokenCmd) -> Result<()> {
    match c {
        TokenCmd::Create {
            user,
            expires_days,
            g,
        } => {
            let body = gigafab_api::CreateToken {
                user: user.map(|u| gigafab_api::IdRef::Num(u as i64)),
                expires_in_days: Some(expires_days),
            };
            let r = g.conn.api()?.post(&["tokens"], Some(&body)).await?;
            if g.output == Format::Table {
                let t: gigafab_api::NewToken = typed(&r.value)?;
                note(&format!(
                    "created token {} (expires {}); revoke it with `gigafab token revoke {}`",
                    t.id, t.expires_at, t.id
                ));
            }
            show_as(&g, &r, |t: &gigafab_api::NewToken| {
                format!("token for {} (shown once): {}\n", t.user, t.token)
            })
        }
        TokenCmd::List(a) => {
            let r = a.g.conn.api()?.get_list(&["tokens"], &[], true).await?;
            show_as(&a.g, &r, |p: &gigafab_api::Page<gigafab_api::Token>| {
                let mut t = format!(
                    "{:>6}  {:<16} {:<26} {}\n",
                    "ID", "USER", "CREATED", "EXPIRES"
                );
                for x in &p.items {
                    t.push_str(&format!(
                        "{:>6}  {:<16} {:<26} {}\n",
                        x.id,
                        x.user_name.as_deref().unwrap_or("-"),
                        x.created_at,
                        x.expires_at.as_deref().unwrap_or("-")
                    ));
                }
                t
            })
        }
        TokenCmd::Revoke { id, g } => {
            let r = g.conn.api()?.delete(&["tokens", &id.to_string()]).await?;
            show_as(&g, &r, |t: &gigafab_api::RevokedToken| {
                format!("revoked token {}\n", t.id)
            })
        }
    }
}
