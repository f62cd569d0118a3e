//! `weft ctl user add | remove | list`, `grant`, `revoke`: who may do what.

use std::io::Write;

use weft::proto as pb;

use super::{Ctx, grpc, print_json, say};

pub(super) async fn add(cx: &Ctx, name: String, with_token: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let r = cx.cluster()?.add_user(pb::AddUserRequest { name, token: with_token }).await.map_err(grpc)?.into_inner();
    if cx.json {
        return print_json(&serde_json::json!({ "lines": r.lines, "token": r.token, "map_version": r.map_version }));
    }
    for l in &r.lines {
        writeln!(out, "{l}")?;
    }
    if !r.token.is_empty() {
        writeln!(out, "token (shown this once; weft ... --token, or WEFT_TOKEN): {}", r.token)?;
    }
    Ok(())
}

pub(super) async fn remove(cx: &Ctx, name: String) -> anyhow::Result<()> {
    let req = pb::RemoveUserRequest { name };
    say(cx.cluster()?.remove_user(req).await.map_err(grpc)?.into_inner(), cx.json)
}

pub(super) async fn list(cx: &Ctx) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let users = cx.cluster()?.list_users(pb::ListUsersRequest {}).await.map_err(grpc)?.into_inner().users;
    let roles = |u: &pb::UserView| -> Vec<String> {
        u.grants
            .iter()
            .map(|g| if g.service.is_empty() { g.role.clone() } else { format!("{} on {}", g.role, g.service) })
            .collect()
    };
    if cx.json {
        let v: Vec<_> = users
            .iter()
            .map(|u| serde_json::json!({ "name": u.name, "token": u.has_token, "roles": roles(u) }))
            .collect();
        return print_json(&v);
    }
    writeln!(out, "{:<24} {:<6} ROLES", "USER", "TOKEN")?;
    for u in &users {
        let r = roles(u);
        let r = if r.is_empty() { "-".to_string() } else { r.join(", ") };
        writeln!(out, "{:<24} {:<6} {r}", u.name, if u.has_token { "yes" } else { "no" })?;
    }
    Ok(())
}

pub(super) async fn grant(cx: &Ctx, grantee: String, role: String, service: Option<String>) -> anyhow::Result<()> {
    let req = pb::GrantRequest { user: grantee, role, service: service.unwrap_or_default() };
    say(cx.cluster()?.grant(req).await.map_err(grpc)?.into_inner(), cx.json)
}

pub(super) async fn revoke(cx: &Ctx, grantee: String, role: String, service: Option<String>) -> anyhow::Result<()> {
    let req = pb::GrantRequest { user: grantee, role, service: service.unwrap_or_default() };
    say(cx.cluster()?.revoke(req).await.map_err(grpc)?.into_inner(), cx.json)
}
