//! Users and grants (`weft ctl user add|remove|list`, `weft ctl grant|revoke`), kept in the
//! cluster map. A change is one conditional map write, like every map change; every node
//! reads it within a heartbeat (`Manager::refresh_access`). A bearer token is made here,
//! answered once and stored only as its SHA-256.

use tonic::Status;
use weft_proto::v1 as pb;
use weft_security::Role;
use weft_security::access::{new_token, token_digest};
use weft_security::identity::check_user_name;

use super::Manager;

fn bad(e: weft_security::Error) -> Status {
    Status::invalid_argument(e.to_string())
}

/// The grant a request names, checked: a known role, and a service the map has (a grant on
/// a service that does not exist yet would silently wait for one made later under that name).
fn grant_of(m: &pb::ClusterMap, req: &pb::GrantRequest) -> Result<pb::UserGrant, Status> {
    let role = Role::parse(&req.role).map_err(bad)?;
    let service = req.service.trim().to_string();
    if !service.is_empty() && !m.services.contains_key(&service) {
        return Err(Status::not_found(format!("no service {service} (weft ctl services lists them)")));
    }
    Ok(pb::UserGrant { role: role.name().into(), service })
}

/// Refuses a change that leaves no user a cluster-wide operator: nobody but a node could
/// then manage users again.
fn keeps_an_operator(m: &pb::ClusterMap) -> Result<(), Status> {
    let operator = Role::Operator.name();
    if m.users.values().any(|u| u.grants.iter().any(|g| g.role == operator && g.service.is_empty())) {
        return Ok(());
    }
    Err(Status::failed_precondition("that would leave no cluster-wide operator: grant another user operator first"))
}

fn describe(g: &pb::UserGrant) -> String {
    if g.service.is_empty() { format!("{} (cluster-wide)", g.role) } else { format!("{} on {}", g.role, g.service) }
}

impl Manager {
    pub(super) async fn list_users(&self) -> Result<pb::ListUsersResponse, Status> {
        let leader = self.leading().ok_or_else(|| Status::unavailable("not the cluster manager"))?;
        let (m, _) = super::map::read(&leader, &self.decoded)
            .await?
            .ok_or_else(|| Status::unavailable("the cluster map is not written yet"))?;
        let mut users: Vec<pb::UserView> = m
            .users
            .values()
            .map(|u| pb::UserView {
                name: u.name.clone(),
                has_token: !u.token_sha256.is_empty(),
                grants: u.grants.clone(),
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pb::ListUsersResponse { users })
    }

    pub(super) async fn add_user(&self, req: pb::AddUserRequest) -> Result<pb::AddUserResponse, Status> {
        check_user_name(&req.name).map_err(bad)?;
        let token = req.token.then(new_token);
        let digest = token.as_deref().map(token_digest);
        let (line, version) = self
            .update(|m| {
                if let Some(u) = m.users.get_mut(&req.name) {
                    let Some(d) = digest else {
                        return Err(Status::already_exists(format!("user {} exists", req.name)));
                    };
                    // Asking an existing user for a token replaces its token (rotation).
                    u.token_sha256 = d.to_vec().into();
                    return Ok(format!("user {}: new token (the old one no longer works)", req.name));
                }
                m.users.insert(
                    req.name.clone(),
                    pb::UserInfo {
                        name: req.name.clone(),
                        token_sha256: digest.map(|d| d.to_vec()).unwrap_or_default().into(),
                        grants: Vec::new(),
                    },
                );
                Ok(format!(
                    "user {} added, with no role yet (weft ctl grant {} reader|writer|operator [--service S])",
                    req.name, req.name
                ))
            })
            .await?;
        tracing::info!(user = %req.name, token = token.is_some(), "user added or its token replaced");
        Ok(pb::AddUserResponse { lines: vec![line], token: token.unwrap_or_default(), map_version: version })
    }

    pub(super) async fn remove_user(&self, req: pb::RemoveUserRequest) -> Result<pb::CtlResponse, Status> {
        let (_, version) = self
            .update(|m| {
                m.users.remove(&req.name).ok_or_else(|| Status::not_found(format!("no user {}", req.name)))?;
                keeps_an_operator(m)
            })
            .await?;
        tracing::info!(user = %req.name, "user removed");
        Ok(pb::CtlResponse {
            lines: vec![format!("user {} removed: its certificate and token are refused from now on", req.name)],
            map_version: version,
            ..Default::default()
        })
    }

    pub(super) async fn grant(&self, req: pb::GrantRequest, give: bool) -> Result<pb::CtlResponse, Status> {
        let (line, version) = self
            .update(|m| {
                let g = grant_of(m, &req)?;
                let u = m.users.get_mut(&req.user).ok_or_else(|| Status::not_found(format!("no user {}", req.user)))?;
                let had = u.grants.contains(&g);
                if give {
                    if had {
                        return Ok(format!("user {} already holds {}", req.user, describe(&g)));
                    }
                    u.grants.push(g.clone());
                    Ok(format!("user {} now holds {}", req.user, describe(&g)))
                } else {
                    if !had {
                        return Err(Status::not_found(format!("user {} does not hold {}", req.user, describe(&g))));
                    }
                    u.grants.retain(|x| *x != g);
                    keeps_an_operator(m)?;
                    Ok(format!("user {} no longer holds {}", req.user, describe(&g)))
                }
            })
            .await?;
        tracing::info!(user = %req.user, role = %req.role, service = %req.service, give, "grant changed");
        Ok(pb::CtlResponse { lines: vec![line], map_version: version, ..Default::default() })
    }
}

/// The map as someone other than a node may see it: without its users and token digests.
pub fn without_users(mut r: pb::GetMapResponse) -> pb::GetMapResponse {
    if let Some(m) = r.map.as_mut() {
        m.users.clear();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_name_known_roles_and_services() {
        let mut m = pb::ClusterMap::default();
        m.services.insert("demo".into(), pb::ServiceInfo { name: "demo".into(), ..Default::default() });
        let req = |role: &str, service: &str| pb::GrantRequest {
            user: "u".into(),
            role: role.into(),
            service: service.into(),
        };
        assert_eq!(grant_of(&m, &req("writer", "demo")).unwrap().role, "writer");
        assert_eq!(grant_of(&m, &req("reader", "")).unwrap().service, "");
        assert_eq!(grant_of(&m, &req("node", "")).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(grant_of(&m, &req("admin", "")).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(grant_of(&m, &req("reader", "nope")).unwrap_err().code(), tonic::Code::NotFound);
    }

    #[test]
    fn the_last_cluster_wide_operator_stays() {
        let mut m = pb::ClusterMap::default();
        assert!(super::super::map::init_users(&mut m));
        keeps_an_operator(&m).unwrap();
        m.users.get_mut("root").unwrap().grants[0].service = "demo".into();
        assert_eq!(keeps_an_operator(&m).unwrap_err().code(), tonic::Code::FailedPrecondition);
        m.users.clear();
        assert!(keeps_an_operator(&m).is_err());
    }
}
